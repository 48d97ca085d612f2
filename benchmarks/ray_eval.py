"""Evaluations per second on a text ecosystem: in-process against Ray actors on a local cluster.

    python -m benchmarks.ray_eval                       # 16 children, 7 interleaved rounds
    python -m benchmarks.ray_eval --children 8 --rounds 3 --hidden 128

It builds (once, cached by its settings) a causal-lm ecosystem with two tasks scored by likelihood,
writes ``--children`` merged children as safetensors files, and scores them all, round after round,
with: one in-process evaluator on 1 torch thread; Ray with two 1-thread actors; one in-process
evaluator on 2 threads; Ray with one 1-thread actor. The configurations take turns within every
round, so a load from other processes hits them alike; medians over rounds are reported. Ray's
per-evaluation overhead is the one-actor pool's wall time per child less the time the actor itself
spent scoring it. Every configuration must return the 1-thread in-process scores (2 threads: within
float tolerance), or the run fails.
"""

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from prometheus_client import REGISTRY

from benchmarks.ray_cluster import LocalCluster
from benchmarks.text_ecosystem import text_ecosystem
from ecosystem import scoring, store
from ecosystem.ray_evaluator import RayEvaluator
from ecosystem.runtime import open_runtime
from ecosystem.settings import EvolutionSettings, Settings
from m2n2.checkpoint import SafetensorsSource
from m2n2.genomes import LazyGenomes

log = logging.getLogger("benchmarks.ray_eval")
RESULTS = Path(__file__).parent / "results"


def ecosystem_dir(cache: Path, hidden: int, layers: int, points: int) -> Path:
    """The cached ecosystem of these settings (built on first use)."""
    root = cache / f"ray_eval-h{hidden}-l{layers}-p{points}"
    if not (root / "data" / "ecosystem.db").is_file():
        text_ecosystem(root, hidden=hidden, layers=layers, points_per_task=points)
    return root / "data"


def children(runtime, n: int, out: Path) -> list[SafetensorsSource]:
    """``n`` split-SLERP children of the two specialists (seeded ratios and split points), as files."""
    with runtime.sessions() as session:
        _, _, space = runtime.family(session)
        parents = [runtime.source(m) for m in store.list_models(session)[:2]]
    genomes, generator = LazyGenomes(space, out), torch.Generator().manual_seed(0)
    made = []
    for _ in range(n):
        ratio, split = (
            float(torch.rand((), generator=generator)),
            int(torch.randint(0, space.dim, (), generator=generator)),
        )
        made.append(genomes.child(parents[0], parents[1], ratio, split, 0.0, generator))
    return made


def actor_seconds() -> float:
    """Seconds Ray actors reported scoring, over this process's lifetime (all actor labels)."""
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "m2n2_ray_evaluation_duration_seconds"
        for s in metric.samples
        if s.name.endswith("_sum")
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--points", type=int, default=16, help="fitness points per task (two tasks)")
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_eval.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    runtime = open_runtime(Settings(data_dir=ecosystem_dir(args.cache, args.hidden, args.layers, args.points)))
    with runtime.sessions() as session:
        family, config, _ = runtime.family(session)
        points = scoring.fitness_set(session)
    batch = children(runtime, args.children, runtime.artifacts.tmp_dir / "ray-eval")
    local = scoring.InProcessEvaluator(family, config, points)
    load_before = os.getloadavg()

    # Three 1-CPU actors in all (two in one pool, one in the other); only one pool works at a time.
    with LocalCluster(num_cpus=3) as cluster:
        pools = {
            n: RayEvaluator(EvolutionSettings(ray_address=cluster.address, ray_actors=n, torch_threads=1)).bind(
                family.name, local
            )
            for n in (2, 1)
        }
        torch.set_num_threads(1)
        reference = local.evaluate(batch)
        for pool in pools.values():  # start the actors and load their points before timing
            pool.evaluate(batch[:2])
            assert len(pool.actors_) > 0, "the Ray pool did not start"

        def in_process(threads: int):
            def run() -> list[torch.Tensor]:
                torch.set_num_threads(threads)
                return local.evaluate(batch)

            return run

        configurations = {
            "in-process, 1 thread": in_process(1),
            "ray, 2 actors x 1 thread": lambda: pools[2].evaluate(batch),
            "in-process, 2 threads": in_process(2),
            "ray, 1 actor x 1 thread": lambda: pools[1].evaluate(batch),
        }
        seconds: dict[str, list[float]] = {name: [] for name in configurations}
        overhead: list[float] = []
        for round_ in range(args.rounds):
            for name, run in configurations.items():
                before_actor = actor_seconds()
                start = time.perf_counter()
                scores = run()
                wall = time.perf_counter() - start
                seconds[name].append(wall)
                exact = "2 threads" not in name
                for got, want in zip(scores, reference, strict=True):
                    same = torch.equal(got, want) if exact else torch.allclose(got, want, atol=1e-4)
                    assert same, f"{name} scores differ from the 1-thread in-process scores"
                if name.startswith("ray, 1 actor"):
                    overhead.append((wall - (actor_seconds() - before_actor)) / len(batch))
            log.info("round %d: %s", round_, {k: f"{v[-1]:.2f}s" for k, v in seconds.items()})
        for pool in pools.values():
            pool.close()
    torch.set_num_threads(1)

    rate = {name: len(batch) / statistics.median(s) for name, s in seconds.items()}
    baseline = rate["in-process, 1 thread"]
    result = {
        "command": " ".join(["python -m benchmarks.ray_eval", *(sys.argv[1:] if argv is None else argv)]),
        "model": {"hidden": args.hidden, "layers": args.layers, "parameters": runtime_space_dim(runtime)},
        "fitness_points": len(points),
        "children": len(batch),
        "rounds": args.rounds,
        "evaluations_per_second": rate,
        "speedup_over_in_process_1_thread": {name: r / baseline for name, r in rate.items()},
        "seconds_per_evaluation_in_process_1_thread": 1 / baseline,
        "ray_overhead_seconds_per_evaluation": statistics.median(overhead),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    for child in batch:
        child.close()
        child.path.unlink(missing_ok=True)
    runtime.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'configuration':28} {'evals/s':>8} {'vs 1 thread':>12}")
    for name, r in rate.items():
        print(f"{name:28} {r:8.2f} {r / baseline:11.2f}x")
    print(f"Ray overhead per evaluation: {1000 * result['ray_overhead_seconds_per_evaluation']:.1f} ms")
    print(f"load average before/after: {load_before[0]:.1f} / {result['load_average_after'][0]:.1f}")
    return result


def runtime_space_dim(runtime) -> int:
    with runtime.sessions() as session:
        return runtime.family(session)[2].dim


if __name__ == "__main__":
    main()
