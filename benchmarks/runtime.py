"""The ecosystem runtime against the bare library loop, on the digits demo ecosystem.

    python -m benchmarks.runtime                     # 10,000 steps, 5 seeds
    python -m benchmarks.runtime --steps 2000 --seeds 1

For each seed it runs, side by side, the bare ``M2N2`` loop of the library (the two
specialists, the training split as fitness points) and the ``Evolver`` on a fresh data
directory (store, scoring cache, artifacts, lineage, promotion gate after every tick).
It reports the champion's gate accuracy against the better specialist's and the
runtime's time per step as a ratio to the bare loop's.
"""

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ecosystem import scoring, store
from ecosystem.demo import init_digits
from ecosystem.evolver import Evolver
from ecosystem.runtime import open_runtime
from ecosystem.settings import EvolutionSettings, Settings
from m2n2 import M2N2, EvolutionConfig, FlatGenomes, digits

log = logging.getLogger("benchmarks.runtime")


def bare_seconds(steps: int, seed: int) -> float:
    """Wall time of the library loop alone: no store, no files."""
    data, space = digits.load_split(), digits.mlp_space()
    evolver = M2N2(
        digits.FlatMLPScorer(data.x_train, data.y_train, space), EvolutionConfig(seed=seed), FlatGenomes(space.dim)
    )
    evolver.seed_archive(digits.train_specialists(data, space))
    start = time.perf_counter()
    evolver.run(steps=steps)
    return time.perf_counter() - start


def runtime_run(steps: int, seed: int, steps_per_tick: int, threads: int) -> dict[str, float]:
    """Time of the evolver's ticks on a fresh demo ecosystem, and the gate accuracies at the end."""
    with tempfile.TemporaryDirectory() as data_dir:
        evolution = EvolutionSettings(seed=seed, steps_per_tick=steps_per_tick, torch_threads=threads)
        runtime = open_runtime(Settings(data_dir=Path(data_dir), evolution=evolution))
        specialists = init_digits(runtime)
        evolver = Evolver(runtime)
        start = time.perf_counter()
        done = 0
        while done < steps:
            done += evolver.tick(steps=min(steps_per_tick, steps - done)).steps
        seconds = time.perf_counter() - start
        with runtime.sessions() as session:
            gate = scoring.gate_set(session)

            def gate_accuracy(model_id: int) -> float:
                return float(scoring.model_scores(session, runtime, store.get_model(session, model_id), gate).mean())

            champion = gate_accuracy(store.champion(session).model_id)
            best_specialist = max(gate_accuracy(r.model_id) for r in specialists)
            promotions = sum(e.action == "promote" for e in store.champion_history(session, limit=1000))
    return {"seconds": seconds, "champion": champion, "specialist": best_specialist, "promotions": promotions}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0, 1, ...")
    parser.add_argument("--steps-per-tick", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, for both loops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ecosystem").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    ratios, runs = [], []
    for seed in range(args.seeds):
        bare = bare_seconds(args.steps, seed)
        run = runtime_run(args.steps, seed, args.steps_per_tick, args.threads)
        ratios.append(run["seconds"] / bare)
        runs.append(run)
        log.info(
            "seed %d: bare %.1f s, runtime %.1f s (x%.2f); champion gate %.1f%%, best specialist %.1f%%, %d promotions",
            seed, bare, run["seconds"], ratios[-1], 100 * run["champion"], 100 * run["specialist"], run["promotions"],
        )  # fmt: skip
    result = {
        "steps": args.steps,
        "seeds": args.seeds,
        "champion_gate_accuracy_mean": statistics.mean(r["champion"] for r in runs),
        "best_specialist_gate_accuracy": statistics.mean(r["specialist"] for r in runs),
        "overhead_ratio_median": statistics.median(ratios),
        "overhead_ratios": ratios,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
