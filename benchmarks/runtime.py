"""The ecosystem runtime against the bare library loop, on the digits demo ecosystem.

    python -m benchmarks.runtime                     # 10,000 steps, 5 seeds
    python -m benchmarks.runtime --steps 2000 --seeds 1

For each seed it runs, taking turns tick by tick, the bare ``M2N2`` loop of the library
(the two specialists, the training split as fitness points) and the ``Evolver`` on a
fresh data directory (store, scoring cache, artifacts, lineage, promotion gate after
every tick). It reports the champion's gate accuracy against the better specialist's
and the runtime's time per step as a ratio to the bare loop's.
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
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import EvolutionSettings, Settings
from m2n2 import M2N2, EvolutionConfig, FlatGenomes, digits

log = logging.getLogger("benchmarks.runtime")


class BareLoop:
    """The library loop alone, on the same specialists and fitness points: no store, no files."""

    def __init__(self, seed: int) -> None:
        data, space = digits.load_split(), digits.mlp_space()
        scorer = digits.FlatMLPScorer(data.x_train, data.y_train, space)
        self.evolver = M2N2(scorer, EvolutionConfig(seed=seed), FlatGenomes(space.dim))
        self.evolver.seed_archive(digits.train_specialists(data, space))

    def run(self, steps: int) -> float:
        """Wall time of ``steps`` more generations."""
        start = time.perf_counter()
        self.evolver.run(steps=steps)
        return time.perf_counter() - start


def paired_run(steps: int, seed: int, steps_per_tick: int, threads: int) -> dict[str, float]:
    """Both loops, tick by tick in turn, on a fresh demo ecosystem; their times and the gate accuracies at the end.

    Taking turns every tick gives both loops the same share of whatever else the machine runs, so the ratio
    measures the runtime, not the load that happened to coincide with one of them.
    """
    with tempfile.TemporaryDirectory() as data_dir:
        evolution = EvolutionSettings(seed=seed, steps_per_tick=steps_per_tick, torch_threads=threads)
        runtime = open_runtime(Settings(data_dir=Path(data_dir), evolution=evolution))
        specialists = init_digits(runtime)
        bare, evolver = BareLoop(seed), Evolver(runtime)
        bare_seconds = runtime_seconds = 0.0
        done = 0
        while done < steps:
            budget = min(steps_per_tick, steps - done)
            bare_seconds += bare.run(budget)
            start = time.perf_counter()
            done += evolver.tick(steps=budget).steps
            runtime_seconds += time.perf_counter() - start
        gate = gate_figures(runtime, [r.model_id for r in specialists])
        runtime.close()
    return {"bare": bare_seconds, "seconds": runtime_seconds, **gate}


def gate_figures(runtime: Runtime, specialist_ids: list[int]) -> dict[str, float]:
    """The champion's and the better specialist's gate accuracy, and how many promotions there were."""
    with runtime.sessions() as session:
        gate = scoring.gate_set(session)

        def gate_accuracy(model_id: int) -> float:
            return float(scoring.model_scores(session, runtime, store.get_model(session, model_id), gate).mean())

        return {
            "champion": gate_accuracy(store.champion(session).model_id),
            "specialist": max(gate_accuracy(i) for i in specialist_ids),
            "promotions": sum(e.action == "promote" for e in store.champion_history(session, limit=1000)),
        }


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
        run = paired_run(args.steps, seed, args.steps_per_tick, args.threads)
        ratios.append(run["seconds"] / run["bare"])
        runs.append(run)
        log.info(
            "seed %d: bare %.1f s, runtime %.1f s (x%.2f); champion gate %.1f%%, best specialist %.1f%%, %d promotions",
            seed, run["bare"], run["seconds"], ratios[-1], 100 * run["champion"], 100 * run["specialist"],
            run["promotions"],
        )  # fmt: skip
    result = {
        "steps": args.steps,
        "seeds": args.seeds,
        "champion_gate_accuracy_mean": statistics.mean(r["champion"] for r in runs),
        "best_specialist_gate_accuracy": statistics.mean(r["specialist"] for r in runs),
        "promotions": [r["promotions"] for r in runs],
        "overhead_ratio_median": statistics.median(ratios),
        "overhead_ratios": ratios,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
