"""Predict over HTTP against the same champion called in-process, on the digits ecosystem.

    python -m benchmarks.serving                      # 3 scenarios, 3000 timed calls + 10 s of load each
    python -m benchmarks.serving --calls 500 --load-seconds 3

Each scenario starts a real ``bentoml serve service.app:Ecosystem`` (two entry workers and
the evolver) on a fresh data directory:

- ``idle``: the evolver has finished its first tick and waits (interval one hour);
- ``evolving``: the evolver ticks back to back (200 steps per tick);
- ``swapping``: as ``evolving``, and the champion moves (promote, rollback) every few seconds.

Latency is one client calling ``/predict`` with one digit at a time, next to the champion
module called in this process on the same inputs (interleaved, so both see the same machine
load). Throughput is several concurrent clients for a fixed time. Every non-200 answer counts
as a failure. The last line printed is the JSON of every figure.
"""

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from ecosystem import store
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from m2n2 import digits
from service.process import Server

log = logging.getLogger("benchmarks.serving")

TOKEN = "benchmark-token"
SCENARIOS = {
    "idle": {"M2N2_EVOLUTION__INTERVAL_SECONDS": "3600"},
    "evolving": {"M2N2_EVOLUTION__INTERVAL_SECONDS": "0.1", "M2N2_EVOLUTION__STEPS_PER_TICK": "200"},
    "swapping": {"M2N2_EVOLUTION__INTERVAL_SECONDS": "0.1", "M2N2_EVOLUTION__STEPS_PER_TICK": "200"},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def in_process_champion(data_dir: Path):
    """The stored champion built in this process, exactly as a worker builds it."""
    runtime = open_runtime(Settings(data_dir=data_dir), migrate=False)
    with runtime.sessions() as session:
        model = store.get_model(session, store.champion(session).model_id)
        family, config, _ = runtime.family(session)
    module = family.build(config, runtime.state_dict(model))
    runtime.close()
    return lambda inputs: family.predict(module, inputs)


def latencies(server: Server, calls: int, inputs: list[list[float]]) -> dict[str, list[float] | int]:
    """Interleaved single calls: over HTTP, then in process, on the same input."""
    predict = in_process_champion(server.data_dir)
    http, local, failures = [], [], 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(calls + 100):  # the first 100 of each warm up
            body = {"inputs": [inputs[i % len(inputs)]]}
            start = time.perf_counter()
            response = client.post("/predict", json=body)
            took = time.perf_counter() - start
            failures += response.status_code != 200
            start = time.perf_counter()
            predict(body["inputs"])
            local_took = time.perf_counter() - start
            if i >= 100:
                http.append(took)
                local.append(local_took)
    return {"http": http, "local": local, "failures": failures}


def throughput(server: Server, seconds: float, clients: int, inputs: list[list[float]]) -> dict[str, float | int]:
    """Requests per second from ``clients`` threads calling back to back for ``seconds``."""
    counts, failures, stop = [0] * clients, [0] * clients, threading.Event()

    def run(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            i = k
            while not stop.is_set():
                response = client.post("/predict", json={"inputs": [inputs[i % len(inputs)]]})
                counts[k] += 1
                failures[k] += response.status_code != 200
                i += clients

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return {"requests_per_s": sum(counts) / (time.perf_counter() - start), "failures": sum(failures)}


class Swapper(threading.Thread):
    """Moves the champion every ``every`` seconds: promote the other specialist, then roll back."""

    def __init__(self, server: Server, every: float) -> None:
        super().__init__(daemon=True)
        self.server, self.every, self.stop, self.moves = server, every, threading.Event(), 0

    def run(self) -> None:
        with self.server.client() as admin:
            champion = admin.post("/status").json()["champion"]["model"]
            other = next(m for m in ("digits-5-9", "digits-0-4") if m != champion)
            while not self.stop.wait(self.every):
                move = admin.post("/promote", json={"model": other}) if self.moves % 2 == 0 else None
                move = move or admin.post("/rollback", json={})
                if move.status_code == 200:
                    self.moves += 1


def scenario(name: str, args: argparse.Namespace, inputs: list[list[float]]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "M2N2_ADMIN_TOKEN": TOKEN,
            "BENTOML_HOME": str(Path(tmp) / "bentoml"),
            "M2N2_SERVICE__WORKERS": str(args.workers),
            **SCENARIOS[name],
        }
        server = Server(Path(tmp) / "data", env, Path(tmp) / "serve.log").start()
        try:
            time.sleep(3)  # let the first tick finish: "idle" means idle
            swapper = Swapper(server, args.swap_every) if name == "swapping" else None
            if swapper:
                swapper.start()
            timed = latencies(server, args.calls, inputs)
            load = throughput(server, args.load_seconds, args.clients, inputs)
            if swapper:
                swapper.stop.set()
                swapper.join()
        finally:
            server.stop()
    http, local = timed["http"], timed["local"]
    return {
        "http_p50_ms": 1e3 * statistics.median(http),
        "http_p99_ms": 1e3 * percentile(http, 0.99),
        "in_process_p50_ms": 1e3 * statistics.median(local),
        "in_process_p99_ms": 1e3 * percentile(local, 0.99),
        "p50_overhead_ms": 1e3 * (statistics.median(http) - statistics.median(local)),
        "requests_per_s": load["requests_per_s"],
        "in_process_calls_per_s": 1 / statistics.mean(local),
        "failures": timed["failures"] + load["failures"],
        "champion_moves": swapper.moves if swapper else 0,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed single calls per scenario")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="length of the throughput run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput run")
    parser.add_argument("--workers", type=int, default=2, help="entry-service workers")
    parser.add_argument("--swap-every", type=float, default=3.0, help="seconds between champion moves")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    torch.set_num_threads(1)  # as each worker
    data = digits.load_split()
    inputs = data.x_test.tolist()
    results = {}
    for name in args.scenarios:
        log.info("scenario %s ...", name)
        results[name] = scenario(name, args, inputs)
        log.info("%s: %s", name, {k: round(v, 3) for k, v in results[name].items()})
    header = "| scenario | HTTP p50 | HTTP p99 | in-process p50 | p50 overhead | req/s (%d clients) | failures |"
    print(header % args.clients)
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['http_p50_ms']:.2f} ms | {r['http_p99_ms']:.2f} ms | {r['in_process_p50_ms']:.3f} ms | "
            f"{r['p50_overhead_ms']:.2f} ms | {r['requests_per_s']:.0f} | {r['failures']} |"
        )
    if {"evolving", "swapping"} <= results.keys():
        results["p99_swapping_over_evolving"] = results["swapping"]["http_p99_ms"] / results["evolving"]["http_p99_ms"]
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
