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

    python -m benchmarks.serving lm                   # a GPT-2-small-sized model behind /v1/completions

``lm`` serves a 124M-parameter GPT-2 (12 layers, 768 wide, 12 heads, 50257 tokens) with random
weights, built once under ``benchmarks/results/`` with a byte-level BPE tokenizer trained here
to the same vocabulary size, as the only specialist of a causal-lm ecosystem (one entry worker).
Latency: ``/v1/completions`` over HTTP interleaved call by call with the same greedy generation
in this process (``family.generate`` on the champion built the same way). Throughput: completion
tokens per second from 8 concurrent clients and from one client at a time, in alternating rounds
(each counted for 60 s after 10 s of warm-up).
"""

import argparse
import json
import logging
import random
import re
import statistics
import string
import sys
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
    """The stored champion built in this process, exactly as a worker builds it: (family, config, module)."""
    runtime = open_runtime(Settings(data_dir=data_dir), migrate=False)
    with runtime.sessions() as session:
        model = store.get_model(session, store.champion(session).model_id)
        family, config, _ = runtime.family(session)
    with runtime.source(model, mmap=True) as source:
        module = family.build(config, source)
    runtime.close()
    return family, config, module


def latencies(server: Server, calls: int, inputs: list[list[float]]) -> dict[str, list[float] | int]:
    """Interleaved single calls: over HTTP, then in process, on the same input."""
    family, config, module = in_process_champion(server.data_dir)

    def predict(inputs: list) -> list:
        return family.predict(module, config, inputs)

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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm"]:
        return lm_main(argv[1:])
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


# --- a language model behind the OpenAI-compatible API -------------------------------------------------------

GPT2_SMALL = {"vocab_size": 50257, "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}
LM_DIR = Path(__file__).resolve().parent / "results" / "gpt2-small-random"
LM_PROMPTS = [f"Once upon a time, in a kingdom number {i}, there lived" for i in range(64)]


def gpt2_small(directory: Path = LM_DIR) -> Path:
    """A GPT-2-small-sized checkpoint with random weights and a 50257-token tokenizer, built once and cached."""
    if (directory / "model.safetensors").is_file():
        return directory
    from transformers import AutoModelForCausalLM, GPT2Config

    from benchmarks.hf import train_tokenizer

    rng = random.Random(0)  # random "words", so byte-level BPE finds 50k merges in a few MB of text
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(60_000)]
    corpus = [" ".join(rng.choice(words) for _ in range(50)) for _ in range(8_000)] + LM_PROMPTS
    fast = train_tokenizer(GPT2_SMALL["vocab_size"], corpus)
    torch.manual_seed(0)
    config = GPT2Config(**GPT2_SMALL, bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])
    model = AutoModelForCausalLM.from_config(config).eval()
    log.info("built a %d-parameter GPT-2 with a %d-token tokenizer", model.num_parameters(), len(fast))
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def lm_data_dir(data_dir: Path, base: Path) -> None:
    """A causal-lm ecosystem whose only specialist (so its champion) is the base model itself."""
    from ecosystem import setup
    from ecosystem.specialists import register

    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        setup.create(runtime, "causal-lm", {"base": str(base)})
        register(runtime, base, name="gpt2-small-random", registered_by="benchmarks.serving")
    finally:
        runtime.close()


def lm_latencies(server: Server, calls: int, max_tokens: int) -> dict[str, list[float]]:
    """Interleaved greedy completions: over HTTP, then the same generation in this process."""
    from ecosystem.families.base import Sampling

    family, config, module = in_process_champion(server.data_dir)
    http, local, failures = [], [], 0
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for i in range(calls + 2):  # the first two of each warm up
            prompt = LM_PROMPTS[i % len(LM_PROMPTS)]
            body = {"model": "champion", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
            start = time.perf_counter()
            response = client.post("/v1/completions", json=body)
            took = time.perf_counter() - start
            failures += response.status_code != 200 or response.json()["usage"]["completion_tokens"] != max_tokens
            start = time.perf_counter()
            steps = list(family.generate(module, config, [prompt], [Sampling(max_tokens=max_tokens, temperature=0)]))
            local_took = time.perf_counter() - start
            failures += steps[-1][0].completion_tokens != max_tokens
            if i >= 2:
                http.append(took)
                local.append(local_took)
    return {"http": http, "local": local, "failures": failures}


def lm_tokens_per_second(
    server: Server, clients: int, seconds: float, max_tokens: int, warmup: float
) -> tuple[float, int]:
    """Completion tokens per second from ``clients`` threads calling back to back.

    Counted over ``seconds`` after ``warmup``: tokens of the completions that finished in that window,
    so the first batch (one client alone while the others queue) does not weigh on the steady state.
    """
    done: list[tuple[float, int]] = []  # (finished at, completion tokens)
    failures, stop = [0] * clients, threading.Event()

    def run(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            i = k
            while not stop.is_set():
                body = {"prompt": LM_PROMPTS[i % len(LM_PROMPTS)], "max_tokens": max_tokens, "temperature": 0}
                response = client.post("/v1/completions", json=body)
                if response.status_code == 200:
                    done.append((time.perf_counter(), response.json()["usage"]["completion_tokens"]))
                else:
                    failures[k] += 1
                i += clients

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    begin = time.perf_counter() + warmup
    time.sleep(warmup + seconds)
    end = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    return sum(n for at, n in done if begin <= at <= end) / (end - begin), sum(failures)


def batch_rows(server: Server) -> tuple[float, float]:
    """(sequences, batches) the workers have decoded so far, from ``m2n2_generation_batch_rows``."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    sums = re.findall(r"^m2n2_generation_batch_rows_sum(?:\{[^}]*\})? (\S+)$", text, re.M)
    counts = re.findall(r"^m2n2_generation_batch_rows_count(?:\{[^}]*\})? (\S+)$", text, re.M)
    return sum(map(float, sums)), sum(map(float, counts))


def lm_main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description="a GPT-2-small-sized model behind /v1/completions")
    parser.add_argument("--calls", type=int, default=20, help="timed completions over HTTP and in process")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput rounds")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each throughput round")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of each round not counted")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per client count, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in the worker and in this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    base = gpt2_small()
    with tempfile.TemporaryDirectory() as tmp:
        lm_data_dir(Path(tmp) / "data", base)
        env = {
            "M2N2_ADMIN_TOKEN": TOKEN,
            "BENTOML_HOME": str(Path(tmp) / "bentoml"),
            "M2N2_SERVICE__INIT_DEMO": "false",
            "M2N2_SERVICE__WORKERS": "1",
            "M2N2_SERVICE__TORCH_THREADS": str(args.threads),
            "M2N2_EVOLUTION__INTERVAL_SECONDS": "3600",
            "M2N2_EVOLUTION__STEPS_PER_TICK": "1",
        }
        server = Server(Path(tmp) / "data", env, Path(tmp) / "serve.log").start()
        try:
            time.sleep(5)  # the evolver's first tick (nothing to score) ends
            log.info("latency: %d completions of %d tokens each way ...", args.calls, args.max_tokens)
            timed = lm_latencies(server, args.calls, args.max_tokens)
            rates: dict[int, list[float]] = {1: [], args.clients: []}
            failures = timed["failures"]
            rows: dict[int, list[float]] = {1: [], args.clients: []}
            for r in range(args.rounds):
                for clients in (1, args.clients):
                    before = batch_rows(server)
                    rate, failed = lm_tokens_per_second(server, clients, args.seconds, args.max_tokens, args.warmup)
                    after = batch_rows(server)
                    rates[clients].append(rate)
                    rows[clients].append((after[0] - before[0]) / max(after[1] - before[1], 1))
                    failures += failed
                    what = "round %d, %d clients: %.1f tokens/s, %.1f sequences per batch"
                    log.info(what, r + 1, clients, rate, rows[clients][-1])
        finally:
            server.stop()
    http, local = statistics.median(timed["http"]), statistics.median(timed["local"])
    one, many = statistics.median(rates[1]), statistics.median(rates[args.clients])
    results = {
        "http_p50_s": http,
        "in_process_p50_s": local,
        "p50_overhead": http / local - 1,
        "tokens_per_s_1_client": one,
        f"tokens_per_s_{args.clients}_clients": many,
        "speedup": many / one,
        "sequences_per_batch": {k: statistics.median(v) for k, v in rows.items()},
        "failures": failures,
    }
    print(f"| completion of {args.max_tokens} tokens | p50 |")
    print("|---|---|")
    print(f"| over HTTP (/v1/completions) | {1e3 * http:.0f} ms |")
    print(f"| in process (family.generate) | {1e3 * local:.0f} ms |")
    print(f"| overhead | **{100 * (http / local - 1):.1f}%** |")
    print()
    print("| clients | completion tokens/s (median of rounds) |")
    print("|---|---|")
    print(f"| 1 at a time | {one:.1f} |")
    print(f"| {args.clients} concurrent | {many:.1f} (**{many / one:.2f}x**) |")
    print(f"sequences per batch (median of rounds): {results['sequences_per_batch']}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
