"""Serving through champion moves: predict clients under load while the champion is promoted and rolled back.

    python -m benchmarks.swap_load                          # 60 s, 8 clients, a move every 2 s
    python -m benchmarks.swap_load --seconds 10 --every 1   # a quick look

A real ``bentoml serve`` of the digits ecosystem (2 workers). ``--clients`` threads post
``/predict`` without pause; another thread alternates ``/promote`` (a specialist) and
``/rollback`` every ``--every`` seconds. It reports every answer that was not 200, the
latency percentiles, and, for each move, the time from the move's answer to the first
prediction carrying the new version (``X-Model-Version``).
"""

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.process import serve

TOKEN = "swap-load-benchmark-token"
DIGIT = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0]
DIGIT += [0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]


@dataclass
class Record:
    """What the clients and the mover saw, with monotonic timestamps."""

    answers: list[tuple[float, int, float, int]] = field(default_factory=list)  # (time, status, seconds, version)
    moves: list[tuple[float, int]] = field(default_factory=list)  # (time of the move's answer, new version)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(url: str, until: float, record: Record) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < until:
            start = time.monotonic()
            try:
                response = http.post("/predict", json={"inputs": [DIGIT]})
                status, version = response.status_code, int(response.headers.get("x-model-version", -1))
            except httpx.HTTPError:
                status, version = 0, -1
            now = time.monotonic()
            with record.lock:
                record.answers.append((now, status, now - start, version))


def mover(url: str, until: float, every: float, record: Record) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        promote = True
        while time.monotonic() + every < until:
            time.sleep(every)
            if promote:
                response = http.post("/promote", json={"model": "digits-5-9", "reason": "swap-load benchmark"})
            else:
                response = http.post("/rollback", json={"reason": "swap-load benchmark"})
            if response.status_code == 200:
                with record.lock:
                    record.moves.append((time.monotonic(), response.json()["version"]))
            promote = not promote


def time_to_new_version(record: Record) -> list[float]:
    """For each move, seconds until the first answer that carries its version (or a later one)."""
    delays = []
    for moved_at, version in record.moves:
        later = [t for t, status, _, v in record.answers if status == 200 and v >= version and t >= moved_at]
        if later:
            delays.append(min(later) - moved_at)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between champion moves")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server = serve(Path(work), M2N2_ADMIN_TOKEN=TOKEN, M2N2_SERVICE__WORKERS="2")
        try:
            record, until = Record(), time.monotonic() + args.seconds
            threads = [threading.Thread(target=client, args=(server.url, until, record)) for _ in range(args.clients)]
            threads.append(threading.Thread(target=mover, args=(server.url, until, args.every, record)))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            server.stop()
    latencies = sorted(seconds for _, status, seconds, _ in record.answers if status == 200)
    failed = [status for _, status, _, _ in record.answers if status != 200]
    delays = time_to_new_version(record)
    result = {
        "benchmark": "swap_load",
        "seconds": args.seconds,
        "clients": args.clients,
        "answers": len(record.answers),
        "non_200": len(failed),
        "moves": len(record.moves),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "new_version_median_s": statistics.median(delays) if delays else None,
        "new_version_max_s": max(delays) if delays else None,
    }
    print(f"{result['answers']} answers in {args.seconds:.0f} s from {args.clients} clients; {len(failed)} not 200")
    print(f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    print(
        f"{len(record.moves)} champion moves; first answer with the new version after a median of "
        f"{result['new_version_median_s']:.3f} s (max {result['new_version_max_s']:.3f} s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
