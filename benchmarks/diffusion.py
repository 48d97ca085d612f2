"""The paper's bilingual diffusion experiment in miniature: merge an English and a Japanese digits specialist.

    python -m benchmarks.diffusion                  # build (cached), merge, evolve, evaluate; JSON on the last line

Two text-to-image specialists are fine-tuned from one base (``benchmarks.diffusion_models``): one on
English prompts ("a handwritten seven"), one on Japanese ones ("手書き の 七"). Each follows only its own
language. Only the UNet is merged, as in the paper; the text encoder, tokenizer, VAE and scheduler are
the base's. The project's digits classifier plays CLIP's role: an image's score is the probability it
gives the prompted digit. Every row is scored on held-out prompt templates of both languages: accuracy
(the classifier reads the prompted digit) and diversity (RMS pixel distance between images of one prompt
drawn from different seeds). M2N2 evolves on the training templates of both languages, in both
chromosome modes of the ``diffusion`` family (attention apart, or one vector).
"""

import argparse
import dataclasses
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import diffusion_build as build_parts
from benchmarks.diffusion_models import LANGUAGES, PRESETS, build
from ecosystem.families import get_family
from ecosystem.families.diffusion import point_seed
from ecosystem.families.image_scorers import DigitsScorer, digits_features
from m2n2 import M2N2, EvolutionConfig
from m2n2.checkpoint import StateDictSource, TensorSource, load_state_dict, open_source
from m2n2.genomes import LazyGenomes
from m2n2.merge import merge

log = logging.getLogger(__name__)

MODES = ("attention", "single")
CLASSIC = {"linear": {}, "slerp": {}, "ties": {"density": 0.5}, "dare": {"density": 0.5}}
NEEDS_BASE = {"ties", "dare"}


def family_config(root: Path, build_dir: Path, mode: str, steps: int, guidance: float) -> dict[str, Any]:
    """A diffusion ecosystem config over the build's base pipeline (its copy made once per mode)."""
    family = get_family("diffusion")
    where = root / f"family-{mode}"
    saved = where / "config.json"
    if not saved.is_file():
        options = {"base": str(build_dir / "base"), "digits_dir": str(build_dir / "classifier"), "chromosomes": mode}
        config = family.create_config({**options, "batch_size": 64}, where)
        saved.write_text(json.dumps(config))
    config = json.loads(saved.read_text())
    return family.validate_config({**config, "steps": steps, "guidance": guidance})


def unet_source(pipeline_dir: Path) -> StateDictSource:
    """A pipeline's UNet weights, in memory."""
    with open_source([pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors"]) as source:
        return StateDictSource(load_state_dict(source))


def fitness_points() -> tuple[list[str], list[str]]:
    """Training-template prompts of both languages for every digit, and their digits as targets."""
    prompts, targets = [], []
    for language, digit in itertools.product(LANGUAGES, range(10)):
        for prompt in build_parts.prompts(language, "train", digit):
            prompts.append(prompt)
            targets.append(str(digit))
    return prompts, targets


def evaluate(config: dict, source: TensorSource, scorer: DigitsScorer, seeds: int) -> dict[str, Any]:
    """Held-out accuracy and diversity per language, and the sample images (language -> (10, c, h, w))."""
    family = get_family("diffusion")
    module = family.build(config, source)
    result: dict[str, Any] = {"samples": {}}
    for language in LANGUAGES:
        prompts, digits, seed_list = [], [], []
        for digit in range(10):
            for prompt in build_parts.prompts(language, "test", digit):
                for s in range(seeds):
                    prompts.append(prompt)
                    digits.append(digit)
                    seed_list.append(point_seed(config["seed"] + s, prompt))
        images = family.draw(module, config, prompts, seed_list)  # (n, 1, h, w) in [0, 1]
        with torch.no_grad():
            read = scorer.model(digits_features(images)).argmax(dim=-1)
        result[language] = float((read == torch.tensor(digits)).float().mean())
        groups = images.view(-1, seeds, *images.shape[1:]).flatten(2)  # (prompts, seeds, pixels)
        result[f"{language}_diversity"] = mean_pairwise_rms(groups)
        per_digit = len(prompts) // 10
        result["samples"][language] = images[::per_digit]  # the first template's first seed of each digit
    result["mean"] = (result["en"] + result["ja"]) / 2
    result["diversity"] = (result["en_diversity"] + result["ja_diversity"]) / 2
    return result


def mean_pairwise_rms(groups: torch.Tensor) -> float:
    """Mean RMS pixel distance between the members of each group (groups, members, pixels), over groups."""
    distances = torch.cdist(groups, groups) / groups.shape[-1] ** 0.5  # (groups, members, members)
    m = groups.shape[1]
    return float(distances.sum(dim=(1, 2)).mean() / (m * (m - 1)))


def real_diversity(seeds: int, generator: torch.Generator) -> float:
    """The same diversity figure on real digits: groups of ``seeds`` random images of one class."""
    from benchmarks.diffusion_train import digit_images

    images, labels = digit_images(build_parts.BENCH.image_size)
    images = (images + 1) / 2
    groups = []
    for digit in range(10):
        pool = images[labels == digit]
        for _ in range(6):
            groups.append(pool[torch.randperm(len(pool), generator=generator)[:seeds]].flatten(1))
    return mean_pairwise_rms(torch.stack(groups))


def evolve(config: dict, sources: list[TensorSource], steps: int, seed: int, archive: int) -> tuple[Any, dict]:
    """M2N2 from the two specialists on both languages' training prompts; the best member and run facts."""
    family = get_family("diffusion")
    prompts, targets = fitness_points()

    def fitness(genome: TensorSource) -> torch.Tensor:
        return family.score(family.build(config, genome), config, prompts, targets, "digits")

    genomes = LazyGenomes(family.space(config))
    evolver = M2N2(fitness, EvolutionConfig(archive_size=archive, seed=seed), genomes)
    start = time.perf_counter()
    evolver.seed_archive(sources)
    first = time.perf_counter() - start
    evolver.run(steps=steps)
    seconds = time.perf_counter() - start
    best = evolver.archive_.best_index()
    facts = {
        "steps": steps,
        "archive_size": archive,
        "seconds": round(seconds, 1),
        "seconds_per_candidate": round(seconds / evolver.n_evaluations_, 2),
        "first_candidate_seconds": round(first / len(sources), 2),
        "best_fitness": float(evolver.archive_.scores[best].mean()),
        "points": len(prompts),
    }
    return evolver.best_, facts


def grid(rows: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """One row of samples per method: digits 0-9 from English prompts, then from Japanese ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.62 * len(rows) + 0.6), squeeze=False)
    for ax, (name, samples) in zip(axes[:, 0], rows.items(), strict=True):
        en, ja = (torch.cat(list(samples[lang][:, 0]), dim=1) for lang in LANGUAGES)  # (h, 10 w) each
        strip = torch.cat([en, torch.zeros(en.shape[0], 6), ja], dim=1)
        ax.imshow(strip.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("digits 0-9 from English prompts | digits 0-9 from Japanese prompts (held-out templates)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | English | Japanese | mean | diversity |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {100 * r['en']:.1f} | {100 * r['ja']:.1f} | {100 * r['mean']:.1f} | {r['diversity']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/cache"), help="built models go here")
    parser.add_argument("--steps", type=int, default=60, help="M2N2 steps per chromosome mode")
    parser.add_argument("--archive", type=int, default=6, help="M2N2 archive size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build", choices=sorted(PRESETS), default="full", help="tiny: untrained, for tests")
    parser.add_argument("--sample-steps", type=int, default=20, help="DDIM steps of held-out images")
    parser.add_argument("--fitness-steps", type=int, default=10, help="DDIM steps of fitness images")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, default=3, help="images per held-out prompt")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: two wait on each other when loaded)")
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/diffusion_samples.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    build_dir = build(args.cache, dataclasses.replace(PRESETS[args.build], seed=args.seed))
    build_facts = json.loads((build_dir / "build.json").read_text())
    log.info("models in %s (built in %.0f s)", build_dir, sum(build_facts["seconds"].values()))
    scorer = DigitsScorer(build_dir / "classifier")
    sources = {name: unet_source(build_dir / name) for name in ("base", *LANGUAGES)}
    specialists = [sources["en"], sources["ja"]]
    configs = {mode: family_config(build_dir, build_dir, mode, args.sample_steps, args.guidance) for mode in MODES}
    fitness_configs = {mode: {**configs[mode], "steps": args.fitness_steps} for mode in MODES}

    candidates: dict[str, TensorSource] = {
        "base": sources["base"],
        "English specialist": sources["en"],
        "Japanese specialist": sources["ja"],
    }
    for method, params in CLASSIC.items():
        base = sources["base"] if method in NEEDS_BASE else None
        candidates[method] = merge(specialists, method, base=base, seed=args.seed, **params)
    runs = {}
    for mode in MODES:
        best, facts = evolve(fitness_configs[mode], specialists, args.steps, args.seed, args.archive)
        candidates[f"M2N2 ({mode})"] = best
        runs[mode] = facts
        log.info("M2N2 %s: %s", mode, facts)

    rows, samples = {}, {}
    eval_seconds = None
    for name, source in candidates.items():
        t = time.perf_counter()
        result = evaluate(configs["attention"], source, scorer, args.seeds)
        eval_seconds = eval_seconds or time.perf_counter() - t
        samples[name] = result.pop("samples")
        rows[name] = result
        log.info(
            "%-22s en %.3f ja %.3f mean %.3f diversity %.3f",
            name,
            result["en"],
            result["ja"],
            result["mean"],
            result["diversity"],
        )
    grid(samples, args.figure)

    m2n2_rows = [n for n in rows if n.startswith("M2N2")]
    best_m2n2 = max(m2n2_rows, key=lambda n: rows[n]["mean"])
    others = [n for n in rows if not n.startswith("M2N2")]
    target = {
        "above_every_other_row": all(rows[best_m2n2]["mean"] > rows[n]["mean"] for n in others),
        "within_10_points_of_specialists": rows[best_m2n2]["en"] >= rows["English specialist"]["en"] - 0.10
        and rows[best_m2n2]["ja"] >= rows["Japanese specialist"]["ja"] - 0.10,
    }
    result = {
        "experiment": "diffusion",
        "rows": {n: {k: round(v, 4) for k, v in r.items()} for n, r in rows.items()},
        "best_m2n2": best_m2n2,
        "target": target,
        "real_digits_diversity": round(real_diversity(args.seeds, torch.Generator().manual_seed(args.seed)), 4),
        "m2n2": runs,
        "build": build_facts,
        "evaluation_seconds_per_model": round(eval_seconds, 2),
        "held_out_images_per_model": 2 * 10 * len(build_parts.TEMPLATES["en"]["test"]) * args.seeds,
        "settings": vars(args) | {"cache": str(args.cache), "figure": str(args.figure)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    log.info("\n%s", table(rows))
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
