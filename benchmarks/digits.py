"""Reproduce the paper's digits experiments (M2N2, arXiv 2508.16204, Fig. 2), every method of the figure.

    python -m benchmarks.digits --panel scratch      # 50,000 forward passes, 10 seeds
    python -m benchmarks.digits --panel pretrained   # 10,000 forward passes, 10 seeds per init pair
    python -m benchmarks.digits --panel pretrained --pairs 1 --seeds 2 --passes 500   # seconds

One forward pass is one evaluation of one model on the whole training set (1,437
points). The reported accuracy is the test accuracy of the model with the best
training accuracy at the end of the budget, as in the reference code.

The pre-trained panel starts from two specialists (digits 0-4 and 5-9). By default each
specialist is trained from its own random init, as the reference code does; how easy
the two are to merge depends a great deal on that init pair, so the panel is run over
``--pairs`` init pairs (init seeds 42, 43, ...), each with the same ``--seeds``.
"""

import argparse
import ast
import functools
import hashlib
import importlib
import inspect
import json
import logging
import statistics
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from benchmarks import baselines
from m2n2 import M2N2, EvolutionConfig, FlatGenomes, StateDictSource, available_methods, digits, get_method, merge
from m2n2.checkpoint import load_state_dict
from m2n2.evolution import MORE_VARIANTS, VARIANTS

log = logging.getLogger("benchmarks.digits")

BASELINES = ("cma-es", "map-elites", "slerp-brute-force")  # the figure's methods that are not the M2N2 loop
# Settings of this library beyond the paper, reported apart from its rows.
BEYOND_PAPER = ("m2n2-mutation-0.02",)
PANELS = {
    # name: (default forward passes, the figure's methods, start from the two specialists?)
    "scratch": (50_000, ["m2n2", "m2n2-no-crossover", "ga", "ga-no-crossover", "cma-es", "map-elites"], False),
    "pretrained": (
        10_000,
        ["m2n2", "m2n2-no-attraction", "m2n2-no-split", "ga", "map-elites", "slerp-brute-force"],
        True,
    ),
}
# Test accuracy (%) the paper reports for its digits figure, mean over 10 seeds.
PAPER = {
    "scratch": {"m2n2": 87.4, "cma-es": 86.1, "ga": 68.4},
    "pretrained": {"m2n2": 68.4, "m2n2-no-attraction": 66.3, "m2n2-no-split": 57.8, "ga": 52.0},
}
SCRATCH_ONLY, PRETRAINED_ONLY = ("cma-es",), ("slerp-brute-force",)
FIRST_SEED = 42  # the reference code runs seeds 42, 43, ...
MUTATION_STD = 0.01  # paper: mutation only when evolving from scratch
N_CHECKPOINTS = 100  # points on each accuracy curve
INIT_STREAM = 10_000  # offset so random inits and the evolver draw from different streams
# What a method's runs depend on besides their settings: a cached run is reused only while the code
# of these is unchanged (compared as syntax trees, so docstrings and comments do not count).
COMMON_CODE = (
    "m2n2.digits:FlatMLPScorer",
    "m2n2.digits:random_init",
    "m2n2.digits:train",
    "m2n2.digits:specialist_inits",
    "m2n2.digits:train_specialists",
    "m2n2.digits:mlp_space",
    "m2n2.crossover:slerp_weights",
    "m2n2.crossover:_cosine",
    "m2n2.crossover:split_slerp",
    "benchmarks.digits:run_once",
)
LOOP_CODE = (
    "m2n2.archive:Archive",
    "m2n2.competition:point_weights",
    "m2n2.competition:attraction",
    "m2n2.competition:sample_index",
    "m2n2.evolution:M2N2",
    "m2n2.evolution:EvolutionConfig",
    "m2n2.genomes:FlatGenomes",
    "benchmarks.digits:evolution_config",
)
BASELINE_CODE = {
    "cma-es": ("benchmarks.baselines:Best", "benchmarks.baselines:cma_es"),
    "map-elites": ("benchmarks.baselines:MapElites",),
    "slerp-brute-force": ("benchmarks.baselines:Best", "benchmarks.baselines:brute_force_slerp"),
}


def all_methods() -> list[str]:
    return [*VARIANTS, *MORE_VARIANTS, *BASELINES]


@dataclass
class Run:
    accuracy: float
    seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (forward passes, test accuracy)


@dataclass(frozen=True)
class Job:
    """One seeded run of one method; ``pair`` is the specialists' init seed (None from scratch)."""

    method: str
    seed: int
    pair: int | None = None


def evolution_config(method: str, seed: int, pretrained: bool) -> EvolutionConfig:
    """The method's settings; the panel sets the mutation (0.01 from scratch, none pre-trained) unless it does."""
    settings = {"mutation_std": 0.0 if pretrained else MUTATION_STD, **{**VARIANTS, **MORE_VARIANTS}[method]}
    return EvolutionConfig(**settings).model_copy(update={"seed": seed})


def run_once(
    job: Job,
    passes: int,
    data: digits.DigitsSplit,
    specialists: tuple[torch.Tensor, ...] = (),
    layout: str = "reference",
) -> Run:
    """One seeded run of one method (from the specialists when given, else from scratch)."""
    method, seed, pretrained = job.method, job.seed, bool(specialists)
    space = digits.mlp_space(layout=layout)
    train_scorer = digits.FlatMLPScorer(data.x_train, data.y_train, space)
    test_scorer = digits.FlatMLPScorer(data.x_test, data.y_test, space)
    every = max(1, passes // N_CHECKPOINTS)
    curve: list[tuple[int, float]] = []

    def record(done: int, best: torch.Tensor) -> None:
        if done % every == 0:
            curve.append((done, float(test_scorer(best).mean())))

    start = time.perf_counter()
    if pretrained:
        starts = list(specialists)
    else:  # two random models N(0, 0.01^2), as the reference code seeds its archive
        generator = torch.Generator().manual_seed(INIT_STREAM + seed)
        starts = [digits.random_init(space, generator) for _ in range(2)]
    if method == "cma-es":
        best = baselines.cma_es(train_scorer, starts[0], passes, seed, checkpoint=record)
    elif method == "map-elites":
        odd = data.y_train % 2 == 1
        elites = baselines.MapElites(train_scorer, odd, seed, mutation_std=0.0 if pretrained else MUTATION_STD)
        for genome in starts:
            elites.offer(genome)
        record(0, elites.best)
        for done in range(1, passes + 1):
            elites.step()
            record(done, elites.best)
        best = elites.best
    elif method == "slerp-brute-force":
        best, _ = baselines.brute_force_slerp(train_scorer, starts[0], starts[1], passes)
        curve = [(passes, float(test_scorer(best).mean()))]
    else:
        config = evolution_config(method, seed, pretrained)
        evolver = M2N2(train_scorer, config, FlatGenomes(space.dim)).seed_archive(starts)
        record(0, evolver.best_)
        evolver.run(steps=passes, callback=lambda _: record(evolver.n_evaluations_ - len(starts), evolver.best_))
        best = evolver.best_
    seconds = time.perf_counter() - start
    return Run(float(test_scorer(best).mean()), seconds, curve)


class RunCache:
    """Finished runs on disk, keyed by everything that decides them, source files included."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    @staticmethod
    @functools.cache
    def code(method: str) -> str:
        """A digest of the code the method's runs depend on, without docstrings and comments."""
        digest = hashlib.sha256()
        for name in (*COMMON_CODE, *BASELINE_CODE.get(method, LOOP_CODE)):
            module, _, attr = name.partition(":")
            target = importlib.import_module(module)
            tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(target, attr) if attr else target)))
            for node in ast.walk(tree):
                body = getattr(node, "body", None)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node):
                    node.body = body[1:] or [ast.Pass()]
            digest.update(ast.dump(tree).encode())
        return digest.hexdigest()[:16]

    def _path(self, key: dict) -> Path:
        key = {**key, "code": self.code(key["method"])}
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / f"{key['method']}-{name}.json"

    def get(self, key: dict) -> Run | None:
        if self.root is None or not self._path(key).exists():
            return None
        stored = json.loads(self._path(key).read_text())
        return Run(stored["accuracy"], stored["seconds"], [tuple(p) for p in stored["curve"]])

    def put(self, key: dict, run: Run) -> None:
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._path(key).write_text(json.dumps(asdict(run)))


def classic_merges(
    data: digits.DigitsSplit, specialists: tuple[torch.Tensor, ...], base: torch.Tensor, layout: str = "reference"
) -> dict[str, float]:
    """Test accuracy of every registered merge method applied once to the two specialists (defaults).

    Methods that need a base (task arithmetic, TIES, DARE) get ``base``: the shared init
    when there is one, else the zero vector (separately initialised specialists have no
    common base, and their task vectors are then the weights themselves).
    """
    space = digits.mlp_space(layout=layout)
    test_scorer = digits.FlatMLPScorer(data.x_test, data.y_test, space)
    models = [StateDictSource(space.unflatten(s)) for s in specialists]
    base_source = StateDictSource(space.unflatten(base))
    accuracies = {}
    for name in available_methods():
        merged = merge(models, name, base=base_source if get_method(name).needs_base else None)
        accuracies[name] = float(test_scorer(space.flatten(load_state_dict(merged))).mean())
    return accuracies


def summarize(runs: dict[Job, Run], passes: int) -> dict:
    """Mean and population std of test accuracy over all runs; per init pair too, when there are pairs."""
    accs = [r.accuracy for r in runs.values()]
    seconds = statistics.mean(r.seconds for r in runs.values())
    summary = {
        "acc_mean": statistics.mean(accs),
        "acc_std": statistics.pstdev(accs),
        "runs": len(accs),
        "seconds_per_run": seconds,
        "evals_per_second": passes / seconds if seconds > 0 else float("inf"),
    }
    pairs = sorted({job.pair for job in runs if job.pair is not None})
    if pairs:
        by_pair = {p: [r.accuracy for j, r in runs.items() if j.pair == p] for p in pairs}
        summary["pair_means"] = {str(p): statistics.mean(a) for p, a in by_pair.items()}
        summary["pair_std"] = statistics.pstdev(summary["pair_means"].values())
        # spread over seeds alone: every method meets the same pairs, so this is what separates methods
        summary["within_pair_std"] = statistics.mean(statistics.pstdev(a) for a in by_pair.values())
    return summary


def plot(title: str, curves: dict[str, list[list[tuple[int, float]]]], path: Path) -> None:
    """Mean test accuracy against forward passes, with a +-1 std band, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, runs in curves.items():
        style = "--" if method in BEYOND_PAPER else "-"
        if len(runs[0]) == 1:  # a one-shot method (brute-force SLERP): its result as a level line
            level = torch.tensor([run[0][1] for run in runs], dtype=torch.float64).mean() * 100
            ax.axhline(float(level), linestyle=":", color="grey", label=method)
            continue
        passes = torch.tensor([p for p, _ in runs[0]], dtype=torch.float64)
        acc = torch.tensor([[a for _, a in run] for run in runs], dtype=torch.float64) * 100  # (runs, checkpoints)
        mean, std = acc.mean(0), acc.std(0, correction=0)
        ax.plot(passes, mean, style, label=method)
        ax.fill_between(passes, mean - std, mean + std, alpha=0.15)
    ax.set(xlabel="forward passes", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict) -> str:
    """The figures as a Markdown table: the paper's methods, then the settings beyond the paper."""
    lines = ["| method | test accuracy (%), mean +- std | runs | paper |", "|---|---|---|---|"]
    for prefix, rows in (("", result["methods"]), ("beyond the paper: ", result.get("beyond_paper", {}))):
        for method, s in rows.items():
            cell = f"{100 * s['acc_mean']:.2f} +- {100 * s['acc_std']:.2f}"
            if "within_pair_std" in s:
                cell += f" (+- {100 * s['within_pair_std']:.2f} within a pair)"
            paper = PAPER[result["panel"]].get(method, "")
            lines.append(f"| {prefix}{method} | {cell} | {s['runs']} | {paper} |")
    return "\n".join(lines)


def parse_methods(value: str | None, pretrained: bool, default: list[str]) -> list[str]:
    methods = value.split(",") if value else [*default, *BEYOND_PAPER]
    for method in methods:
        if method not in all_methods():
            raise SystemExit(f"unknown method {method!r}; available: {', '.join(all_methods())}")
        if method in (SCRATCH_ONLY if pretrained else PRETRAINED_ONLY):
            raise SystemExit(f"{method} belongs to the {'scratch' if pretrained else 'pretrained'} panel")
    return methods


def execute(jobs: list[Job], work: Callable[[Job], Run], cache: RunCache, key: Callable[[Job], dict], n: int) -> dict:
    """Run the jobs (cached ones are read back), ``n`` at a time in worker processes with one thread each."""
    runs = {job: cache.get(key(job)) for job in jobs}
    todo = [job for job, run in runs.items() if run is None]
    log.info("%d runs, %d from the cache", len(jobs), len(jobs) - len(todo))
    if n > 1 and len(todo) > 1:
        with ProcessPoolExecutor(n, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            done = zip(todo, pool.map(work, todo), strict=True)
            for job, run in done:
                cache.put(key(job), run)
                runs[job] = run
    else:
        for job in todo:
            runs[job] = work(job)
            cache.put(key(job), runs[job])
    return runs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", choices=sorted(PANELS), default="scratch")
    parser.add_argument("--methods", help=f"comma-separated, any of: {', '.join(all_methods())}")
    parser.add_argument("--seeds", type=int, default=10, help="runs with seeds 42, 43, ... (for each init pair)")
    parser.add_argument("--passes", type=int, help="forward passes per run; default: the panel's budget")
    parser.add_argument("--init", choices=digits.SPECIALIST_INITS, default="separate", help="specialists' inits")
    parser.add_argument("--pairs", type=int, default=4, help="init pairs for separate inits (init seeds 42, ...)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="directory for the PNG")
    parser.add_argument("--cache", type=Path, help="directory of finished runs to reuse (keyed by code and settings)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (with --jobs 1)")
    parser.add_argument(
        "--layout", choices=digits.LAYOUTS, default="reference", help="flat parameter order (see m2n2.digits.LAYOUTS)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel worker processes (1 thread each)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    default_passes, default_methods, pretrained = PANELS[args.panel]
    passes = args.passes or default_passes
    methods = parse_methods(args.methods, pretrained, default_methods)
    data = digits.load_split()
    space = digits.mlp_space(layout=args.layout)
    test_scorer = digits.FlatMLPScorer(data.x_test, data.y_test, space)
    n_pairs = (1 if args.init == "shared" else args.pairs) if pretrained else 0
    pairs = list(range(FIRST_SEED, FIRST_SEED + n_pairs))
    specialists = {p: digits.train_specialists(data, space, p, init=args.init) for p in pairs}
    classic: dict[str, list[float]] = {}
    for p, pair in specialists.items():
        accs = [100 * float(test_scorer(model).mean()) for model in pair]
        log.info("init pair %d (%s): specialists 0-4 and 5-9 at %.1f%% and %.1f%% test accuracy", p, args.init, *accs)
        base = digits.shared_init(space, p) if args.init == "shared" else torch.zeros(space.dim)
        for name, acc in classic_merges(data, pair, base, args.layout).items():
            classic.setdefault(name, []).append(acc)

    seeds = range(FIRST_SEED, FIRST_SEED + args.seeds)
    jobs = [
        Job(method, seed, pair)
        for method in methods
        for pair in (pairs or [None])
        for seed in (seeds[:1] if method == "slerp-brute-force" else seeds)  # brute force draws nothing at random
    ]

    def key(job: Job) -> dict:
        settings = {"passes": passes, "layout": args.layout, "init": args.init if pretrained else None}
        config = None if job.method in BASELINES else evolution_config(job.method, job.seed, pretrained).model_dump()
        return {**asdict(job), **settings, "config": config}

    work = partial(_run_job, passes=passes, data=data, specialists=specialists, layout=args.layout)
    runs = execute(jobs, work, RunCache(args.cache), key, args.jobs)

    summary, beyond, curves = {}, {}, {}
    for method in methods:
        mine = {job: run for job, run in runs.items() if job.method == method}
        for job, run in mine.items():
            where = f"pair {job.pair} " if job.pair is not None else ""
            log.info("%-20s %sseed %d: %.2f%% in %.1f s", method, where, job.seed, 100 * run.accuracy, run.seconds)
        s = summarize(mine, passes)
        (beyond if method in BEYOND_PAPER else summary)[method] = s
        curves[method] = [r.curve for r in mine.values()]
        log.info("%-20s %.2f%% +- %.2f over %d runs", method, 100 * s["acc_mean"], 100 * s["acc_std"], s["runs"])
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"digits_{args.panel}.png"
    title = f"digits, {args.panel}" + (f" ({args.init} inits, {n_pairs} pairs)" if pretrained else "")
    plot(title, curves, png)
    log.info("wrote %s", png)
    result = {"panel": args.panel, "passes": passes, "seeds": args.seeds, "layout": args.layout, "methods": summary}
    if beyond:
        result["beyond_paper"] = beyond
    if pretrained:
        result.update(init=args.init, pairs=pairs)
        result["classic_merges"] = {  # one-shot merges of each pair's two specialists, mean over pairs
            "base": "shared init" if args.init == "shared" else "zero",
            **{name: statistics.mean(accs) for name, accs in classic.items()},
        }
    log.info("%s", table(result))
    print(json.dumps(result))
    return result


def _run_job(job: Job, passes: int, data, specialists: dict, layout: str) -> Run:
    """``run_once`` for a worker process (a module-level function pickles; a closure does not)."""
    return run_once(job, passes, data, specialists[job.pair] if job.pair is not None else (), layout)


if __name__ == "__main__":
    main()
