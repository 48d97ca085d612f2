"""Reproduce the paper's digits experiments (M2N2, arXiv 2508.16204, Fig. 2).

    python -m benchmarks.digits --panel scratch      # 50,000 forward passes, 10 seeds
    python -m benchmarks.digits --panel pretrained   # 10,000 forward passes, 10 seeds
    python -m benchmarks.digits --panel pretrained --seeds 2 --passes 500   # seconds

One forward pass is one evaluation of one child on the whole training set (1,437
points). The reported accuracy is the test accuracy of the archive member with the
best training accuracy at the end of the budget, as in the reference code.
"""

import argparse
import json
import logging
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from m2n2 import M2N2, EvolutionConfig, FlatGenomes, StateDictSource, available_methods, digits, get_method, merge
from m2n2.checkpoint import load_state_dict

log = logging.getLogger("benchmarks.digits")

PANELS = {
    # name: (default forward passes, methods, start from the two specialists?)
    "scratch": (50_000, ["m2n2", "m2n2-no-crossover", "ga"], False),
    "pretrained": (10_000, ["m2n2", "m2n2-no-attraction", "m2n2-no-split", "ga"], True),
}
FIRST_SEED = 42  # the reference code runs seeds 42, 43, ...
MUTATION_STD = 0.01  # paper: mutation only when evolving from scratch
N_CHECKPOINTS = 100  # points on each accuracy curve
INIT_STREAM = 10_000  # offset so random inits and the evolver draw from different streams


@dataclass
class Run:
    accuracy: float
    seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (forward passes, test accuracy)


def run_once(
    method: str,
    seed: int,
    passes: int,
    pretrained: bool,
    data: digits.DigitsSplit,
    specialists: tuple[torch.Tensor, ...],
    layout: str = "reference",
) -> Run:
    """One seeded run of one method; returns the final test accuracy and its curve."""
    space = digits.mlp_space(layout=layout)
    train_scorer = digits.FlatMLPScorer(data.x_train, data.y_train, space)
    test_scorer = digits.FlatMLPScorer(data.x_test, data.y_test, space)
    config = EvolutionConfig.variant(method, seed=seed, mutation_std=0.0 if pretrained else MUTATION_STD)
    evolver = M2N2(train_scorer, config, FlatGenomes(space.dim))
    every = max(1, passes // N_CHECKPOINTS)
    curve: list[tuple[int, float]] = []

    def test_accuracy() -> float:
        return float(test_scorer(evolver.best_).mean())

    def checkpoint(_result) -> None:
        done = evolver.n_evaluations_ - len(starts)
        if done % every == 0:
            curve.append((done, test_accuracy()))

    start = time.perf_counter()
    if pretrained:
        starts = list(specialists)
    else:  # two random models N(0, 0.01^2), as the reference code seeds its archive
        generator = torch.Generator().manual_seed(INIT_STREAM + seed)
        starts = [digits.random_init(space, generator) for _ in range(2)]
    evolver.seed_archive(starts)
    curve.append((0, test_accuracy()))
    evolver.run(steps=passes, callback=checkpoint)
    seconds = time.perf_counter() - start
    return Run(test_accuracy(), seconds, curve)


def classic_merges(
    data: digits.DigitsSplit, specialists: tuple[torch.Tensor, ...], layout: str = "reference"
) -> dict[str, float]:
    """Test accuracy of every registered merge method applied once to the two specialists.

    Methods that need a base get the specialists' shared init; all use their defaults.
    """
    space = digits.mlp_space(layout=layout)
    test_scorer = digits.FlatMLPScorer(data.x_test, data.y_test, space)
    models = [StateDictSource(space.unflatten(s)) for s in specialists]
    base = StateDictSource(space.unflatten(digits.shared_init(space)))
    accuracies = {}
    for name in available_methods():
        merged = merge(models, name, base=base if get_method(name).needs_base else None)
        accuracies[name] = float(test_scorer(space.flatten(load_state_dict(merged))).mean())
    return accuracies


def plot(panel: str, curves: dict[str, list[list[tuple[int, float]]]], path: Path) -> None:
    """Mean test accuracy against forward passes, with a +-1 std band, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, runs in curves.items():
        passes = torch.tensor([p for p, _ in runs[0]], dtype=torch.float64)
        acc = torch.tensor([[a for _, a in run] for run in runs], dtype=torch.float64) * 100  # (seeds, checkpoints)
        mean, std = acc.mean(0), acc.std(0, correction=0)
        ax.plot(passes, mean, label=method)
        ax.fill_between(passes, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="forward passes", ylabel="test accuracy (%)", title=f"digits, {panel}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", choices=sorted(PANELS), default="scratch")
    parser.add_argument("--methods", help="comma-separated; default: the panel's methods")
    parser.add_argument("--seeds", type=int, default=10, help="runs with seeds 42, 43, ...")
    parser.add_argument("--passes", type=int, help="forward passes per run; default: the panel's budget")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="directory for the PNG")
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
    methods = args.methods.split(",") if args.methods else default_methods
    for method in methods:
        EvolutionConfig.variant(method)  # fail fast on a misspelt name
    data = digits.load_split()
    space = digits.mlp_space(layout=args.layout)
    specialists = digits.train_specialists(data, space) if pretrained else ()
    for name, model in zip(("specialist 0-4", "specialist 5-9"), specialists, strict=False):
        acc = float(digits.FlatMLPScorer(data.x_test, data.y_test, space)(model).mean())
        log.info("%s: test accuracy %.1f%%", name, 100 * acc)
    classic = classic_merges(data, specialists, args.layout) if pretrained else {}
    for name, acc in classic.items():
        log.info("classic merge %-16s test accuracy %.1f%%", name, 100 * acc)

    jobs = [(method, seed) for method in methods for seed in range(FIRST_SEED, FIRST_SEED + args.seeds)]
    work = partial(
        run_once, passes=passes, pretrained=pretrained, data=data, specialists=specialists, layout=args.layout
    )
    if args.jobs > 1:  # independent seeds in worker processes, one torch thread each
        with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            runs = list(pool.map(work, *zip(*jobs, strict=True)))
    else:
        runs = [work(method, seed) for method, seed in jobs]
    summary, curves = {}, {}
    for method in methods:
        mine = [run for (m, seed), run in zip(jobs, runs, strict=True) if m == method]
        for seed, run in enumerate(mine, FIRST_SEED):
            log.info("%-20s seed %d: test accuracy %.2f%% in %.1f s", method, seed, 100 * run.accuracy, run.seconds)
        accs = [r.accuracy for r in mine]
        seconds = statistics.mean(r.seconds for r in mine)
        summary[method] = {
            "acc_mean": statistics.mean(accs),
            "acc_std": statistics.pstdev(accs),
            "seconds_per_run": seconds,
            "evals_per_second": passes / seconds,
        }
        curves[method] = [r.curve for r in mine]
        s = summary[method]
        log.info(
            "%-20s %.2f%% +- %.2f  %.1f s/run  %.0f evals/s",
            method,
            100 * s["acc_mean"],
            100 * s["acc_std"],
            s["seconds_per_run"],
            s["evals_per_second"],
        )
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"digits_{args.panel}.png"
    plot(args.panel, curves, png)
    log.info("wrote %s", png)
    result = {"panel": args.panel, "passes": passes, "seeds": args.seeds, "layout": args.layout, "methods": summary}
    if classic:
        result["classic_merges"] = classic  # one-shot merges of the two specialists, for comparison
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
