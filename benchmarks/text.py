"""The paper's LLM experiment in miniature: merge a math and a shopping-agent specialist into one model.

    python -m benchmarks.text                        # the full-size build, 3 seeds
    python -m benchmarks.text --size tiny --seeds 1 --evaluations 6 --fitness 4 --test 4   # seconds

The models (``ecosystem.text_build``): a locally trained tokenizer and a small ``LlamaForCausalLM``
pre-trained on both domains, then two light fine-tunes of it, ``math`` (GSM8K-style word problems,
the answer after ``####``) and ``shop`` (WebShop-style next action). Every row is scored by the
``causal-lm`` family's exact match of the greedy answer on held-out test problems of both skills,
disjoint from the feedback problems the searched methods optimise (``ecosystem.text_data``).

Rows: the base, each specialist, the classic merges at their defaults (linear average, task
arithmetic, TIES and DARE from the base), a CMA-ES search over per-layer task-arithmetic weights as
mergekit-evolve runs it, and M2N2 (split-point SLERP crossover, resource competition, attraction),
the last two with the same number of evaluations, each one scoring a model on all feedback points.
Seeds change the searches and DARE's masks; the models and the problems are fixed by the build.
"""

import argparse
import functools
import json
import logging
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecosystem import text_build, text_data
from ecosystem.families.causal_lm import CausalLM
from m2n2 import M2N2, EvolutionConfig, FlatGenomes, SafetensorsSource, StateDictSource, merge
from m2n2.checkpoint import load_state_dict
from m2n2.space import ParamSpace

log = logging.getLogger("benchmarks.text")

CLASSIC = {  # row name: (merge method, its parameters); all but linear start from the base
    "linear": ("linear", {}),
    "task-arithmetic": ("task_arithmetic", {}),
    "ties": ("ties", {}),
    "dare": ("dare", {}),
}
SEARCHED = ("cma-es", "m2n2")
SIZES = {"full": text_build.FULL, "tiny": text_build.TINY}
FIRST_SEED = 42
ARCHIVE_SIZE = 15  # the paper's archive for its LLM experiment
CMA_SIGMA0 = 0.3  # initial step of the per-layer weights, which start at 0.5 each (the linear average)
FAMILY_OPTIONS = {"max_new_tokens": 16, "batch_size": 64}

Flat = torch.Tensor  # (dim,) a model as one vector in the family's parameter order


class Skills:
    """Scores a flat model on problems of both skills with the ``causal-lm`` family: (n_math + n_shop,) in {0, 1}."""

    def __init__(self, family: CausalLM, config: dict, space: ParamSpace, examples: list[text_data.Example]) -> None:
        self.family, self.config, self.space = family, config, space
        self.parts = [[e for e in examples if e.skill == skill] for skill in text_data.SKILLS]
        self.calls = 0

    def __call__(self, flat: Flat) -> torch.Tensor:
        self.calls += 1
        module = self.family.build(self.config, StateDictSource(self.space.unflatten(flat)))
        with torch.inference_mode():
            return torch.cat(
                [
                    self.family.score(module, self.config, [e.prompt for e in p], [e.answer for e in p], "exact_match")
                    for p in self.parts
                ]
            )

    def per_skill(self, flat: Flat) -> dict[str, float]:
        """Accuracy per skill, in [0, 1]."""
        scores, out, start = self(flat), {}, 0
        for skill, part in zip(text_data.SKILLS, self.parts, strict=True):
            out[skill] = float(scores[start : start + len(part)].mean())
            start += len(part)
        return out


def layer_groups(space: ParamSpace) -> list[list[str]]:
    """Tensor names per merge-weight group: the embeddings, each decoder layer, then the final norm and head."""
    groups: dict[str, list[str]] = {}
    for spec in space:
        parts = spec.name.split(".")
        key = ".".join(parts[:3]) if "layers" in parts else ("embed" if "embed" in spec.name else "head")
        groups.setdefault(key, []).append(spec.name)
    order = ["embed", *[k for k in groups if k not in ("embed", "head")], "head"]
    return [groups[k] for k in order if k in groups]


def layerwise_task_arithmetic(
    space: ParamSpace, base: Flat, vectors: list[Flat], weights: np.ndarray, groups: list[list[str]]
) -> Flat:
    """base + sum_k w[k, g] * task_vector_k over each group g: mergekit-evolve's per-layer merge weights."""
    out = base.clone()
    w = weights.reshape(len(vectors), len(groups))
    for g, names in enumerate(groups):
        for name in names:
            s = space[name]
            for k, tv in enumerate(vectors):
                out[s.offset : s.end] += float(w[k, g]) * tv[s.offset : s.end]
    return out


def cma_es(
    score: Callable[[Flat], torch.Tensor],
    space: ParamSpace,
    base: Flat,
    specialists: list[Flat],
    evaluations: int,
    seed: int,
) -> Flat:
    """CMA-ES (the ``cma`` package) over per-layer task-arithmetic weights, maximising mean feedback accuracy.

    The genome has one weight per specialist and layer group, starting at 0.5 each (the linear
    average) with step ``CMA_SIGMA0``; the package's default population size; the budget alone
    stops it. Returns the best model seen.
    """
    import cma  # optional: the bench extra

    groups = layer_groups(space)
    vectors = [s - base for s in specialists]
    x0 = np.full(len(vectors) * len(groups), 0.5)
    es = cma.CMAEvolutionStrategy(x0, CMA_SIGMA0, {"seed": seed, "verbose": -9})
    best, best_fitness, done = None, -1.0, 0
    while done < evaluations:
        solutions = es.ask()[: evaluations - done]
        fitnesses = []
        for x in solutions:
            model = layerwise_task_arithmetic(space, base, vectors, np.asarray(x), groups)
            fitness = float(score(model).mean())
            if fitness > best_fitness:
                best, best_fitness = model, fitness
            fitnesses.append(-fitness)
        done += len(solutions)
        if len(solutions) == es.popsize:
            es.tell(solutions, fitnesses)
    return best


def m2n2(
    score: Callable[[Flat], torch.Tensor], space: ParamSpace, specialists: list[Flat], evaluations: int, seed: int
):
    """M2N2 from the two specialists, ``evaluations`` in all (the two seeds' included); the best member by mean."""
    config = EvolutionConfig(archive_size=ARCHIVE_SIZE, seed=seed)
    evolver = M2N2(score, config, FlatGenomes(space.dim)).seed_archive(specialists)
    evolver.run(steps=evaluations - len(specialists))
    return evolver.best_


def family_config(base_dir: Path, root: Path) -> tuple[CausalLM, dict, ParamSpace]:
    """The ``causal-lm`` family's config for a base (its copy made once under ``root``)."""
    family = CausalLM()
    if (root / "base").is_dir():
        config = family.validate_config({"base_dir": str((root / "base").resolve()), **FAMILY_OPTIONS})
    else:
        config = family.create_config({"base": str(base_dir), **FAMILY_OPTIONS}, root)
    return family, config, family.space(config)


def flat_model(space: ParamSpace, directory: Path) -> Flat:
    with SafetensorsSource(Path(directory) / "model.safetensors") as source:
        return space.flatten(load_state_dict(source))


def classic_merge(space: ParamSpace, method: str, params: dict, models: list[Flat], base: Flat, seed: int) -> Flat:
    sources = [StateDictSource(space.unflatten(m)) for m in models]
    base_source = None if method == "linear" else StateDictSource(space.unflatten(base))
    return space.flatten(load_state_dict(merge(sources, method, base=base_source, seed=seed, **params)))


def problems(split: str, n: int, seed: int) -> list[text_data.Example]:
    """``n`` problems of each skill from ``split``, as the text ecosystem's tasks get them."""
    return [e for skill in text_data.SKILLS for e in text_data.examples(skill, split, n, seed)]


@dataclass(frozen=True)
class Setup:
    """What every row of one benchmark run shares (hashable: a worker process keeps one ``Experiment`` per setup)."""

    build: text_build.TextBuildConfig
    cache: Path
    fitness: int
    test: int
    report_feedback: bool  # also score each row on the feedback problems (to choose a build's settings)


class Experiment:
    """The built models as flat vectors, and the family scoring them on the feedback and test problems."""

    def __init__(self, setup: Setup) -> None:
        paths = text_build.build(setup.build, setup.cache)
        family, config, space = family_config(paths["base"], _family_root(setup))
        self.space = space
        self.base = flat_model(space, paths["base"])
        self.specialists = [flat_model(space, paths[skill]) for skill in text_data.SKILLS]
        self.fitness = Skills(family, config, space, problems("feedback", setup.fitness, setup.build.seed))
        self.test = Skills(family, config, space, problems("test", setup.test, setup.build.seed))
        self.report_feedback = setup.report_feedback

    def model(self, name: str, seed: int, evaluations: int) -> Flat:
        if name == "base":
            return self.base
        if name.endswith(" specialist"):
            return self.specialists[text_data.SKILLS.index(name.split()[0])]
        if name in CLASSIC:
            method, params = CLASSIC[name]
            return classic_merge(self.space, method, params, self.specialists, self.base, seed)
        if name == "cma-es":
            return cma_es(self.fitness, self.space, self.base, self.specialists, evaluations, seed)
        return m2n2(self.fitness, self.space, self.specialists, evaluations, seed)

    def row(self, name: str, seed: int, evaluations: int) -> dict:
        """The row's model for ``seed``, scored on the test problems (and the feedback ones when asked)."""
        start, calls = time.perf_counter(), self.fitness.calls
        model = self.model(name, seed, evaluations)
        seconds, used = time.perf_counter() - start, self.fitness.calls - calls
        result = {**self.test.per_skill(model), "seconds": seconds, "evaluations": used}
        if self.report_feedback:
            result["feedback"] = self.fitness.per_skill(model)
        feedback = result.get("feedback")
        log.info("%s seed %d: test %s feedback %s (%.0f s)", name, seed, _rounded(result), feedback, seconds)
        return result


def _family_root(setup: Setup) -> Path:
    return setup.cache / f"text-family-{setup.build.digest()}"


@functools.cache
def _experiment(setup: Setup) -> Experiment:
    return Experiment(setup)


def _row(setup: Setup, name: str, seed: int, evaluations: int) -> dict:
    """One row for one seed, in a worker process (which builds its ``Experiment`` once)."""
    return _experiment(setup).row(name, seed, evaluations)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    build = SIZES[args.size].model_copy(update=dict(args.set or []))
    build = text_build.TextBuildConfig(**build.model_dump())  # the overrides validated
    start = time.perf_counter()
    paths = text_build.build(build, args.cache)  # once, before the workers read it
    log.info("models ready in %.0f s (build: %s)", time.perf_counter() - start, text_build.build_seconds(paths))
    setup = Setup(build, args.cache, args.fitness, args.test, report_feedback=not args.search)
    family_config(paths["base"], _family_root(setup))  # the base's copy, made once before the workers read it
    seeds = range(FIRST_SEED, FIRST_SEED + args.seeds)
    fixed = ["base", *(f"{skill} specialist" for skill in text_data.SKILLS), *(n for n in CLASSIC if n != "dare")]
    searched = SEARCHED if args.search else ()
    # Longest first, so the pool's workers finish together.
    jobs = [(n, s) for s in seeds for n in searched] + [("dare", s) for s in seeds] + [(n, seeds[0]) for n in fixed]
    with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(args.threads,)) as pool:
        futures = {job: pool.submit(_row, setup, *job, args.evaluations) for job in jobs}
        done = {job: future.result() for job, future in futures.items()}
    order = [*fixed[:3], *CLASSIC, *searched]
    rows = {name: [done[(name, s)] if (name, s) in done else done[(name, seeds[0])] for s in seeds] for name in order}
    return summarize(rows, args)


def _rounded(scores: dict) -> dict:
    return {k: round(v, 3) for k, v in scores.items() if k in text_data.SKILLS}


def summarize(rows: dict[str, list[dict]], args: argparse.Namespace) -> dict:
    methods = {}
    for name, runs in rows.items():
        means = [(r["math"] + r["shop"]) / 2 for r in runs]
        methods[name] = {
            "math": statistics.mean(r["math"] for r in runs),
            "shop": statistics.mean(r["shop"] for r in runs),
            "mean": statistics.mean(means),
            "std": statistics.pstdev(means),
            "evaluations": statistics.mean(r["evaluations"] for r in runs),
            "seconds": statistics.mean(r["seconds"] for r in runs),
        }
    return {"benchmark": "text", "seeds": args.seeds, "methods": methods}


def table(result: dict) -> str:
    """The rows as a Markdown table, accuracies in percent."""
    lines = [
        "| method | math (%) | shop (%) | mean (%) +- std | evaluations | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["methods"].items():
        lines.append(
            f"| {name} | {100 * s['math']:.1f} | {100 * s['shop']:.1f} | {100 * s['mean']:.1f} +- {100 * s['std']:.1f} "
            f"| {s['evaluations']:.0f} | {s['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Per-skill test accuracy per method, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["methods"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, skill in enumerate(text_data.SKILLS):
        values = [100 * result["methods"][n][skill] for n in names]
        ax.bar(x + (i - 0.5) * 0.38, values, 0.38, label=skill)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=f"math + shop specialists merged ({result['seeds']} seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or key not in text_build.TextBuildConfig.model_fields:
        fields = ", ".join(text_build.TextBuildConfig.model_fields)
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {fields}, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{key}: expected a JSON value, got {value!r}") from None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="the model build (tiny: seconds)")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds 42, 43, ...")
    parser.add_argument("--evaluations", type=int, default=200, help="evaluations per searched run")
    parser.add_argument("--fitness", type=int, default=50, help="feedback problems per skill")
    parser.add_argument("--test", type=int, default=70, help="held-out test problems per skill")
    parser.add_argument("--jobs", type=int, default=3, help="worker processes (rows run in parallel)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on 2 cores)")
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/cache/text"), help="built models")
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/text.png"))
    parser.add_argument(
        "--set",
        type=_override,
        action="append",
        metavar="KEY=VALUE",
        help="a build setting (JSON value), e.g. --set finetune_lr=1e-3 --set 'finetune_layers={\"math\": [0, 1]}'",
    )
    parser.add_argument("--no-search", dest="search", action="store_false", help="only the rows without a search")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    print(table(result))
    plot(result, args.figure)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
