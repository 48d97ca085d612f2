"""One lazy evolution step on a GPT-2-small-sized model: where the seconds go, and the memory it takes.

    python -m benchmarks.lazy                      # 124M parameters (12 layers, 768 wide, 50,257 tokens)
    python -m benchmarks.lazy --layers 2 --repeats 2    # a quick look
    python -m benchmarks.lazy --probe DATA_DIR     # the peak-RSS probe alone (used by the tests)

Two random specialists are registered into a ``causal-lm`` ecosystem with one exact-match task.
Each repeat makes one child the way the evolver does (streamed from the parents into a pending
artifact file), builds it into a module and scores it, timing the parts; the angle pass a new
pair needs, the merge alone, and a plain read of both parents' tensors from the page cache (the
bound a streaming merge cannot beat) are timed alongside. Then a fresh process runs evolver
ticks and reports the extra peak RSS of one tick against the bound: one model in its compute
dtype plus twice the largest tensor plus a fixed overhead. Checkpoints are cached under
``benchmarks/results/`` keyed by their config.
"""

import argparse
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config

from benchmarks.hf import random_checkpoint
from ecosystem import setup, store, tasks
from ecosystem.evolver import Evolver
from ecosystem.genome_store import genome_store
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import register
from m2n2.checkpoint import SafetensorsSource
from m2n2.crossover import global_cosine, split_slerp_tensors

RESULTS = Path(__file__).parent / "results"
FIXED_OVERHEAD = 160 * 1024**2  # activations of a few short prompts, allocator slack, per-step bookkeeping
PROMPTS = [(f"Question: what is {a} plus {a}? Answer:", f"#### {2 * a}") for a in range(4)]


def gpt2(layers: int, hidden: int, heads: int, vocab: int) -> GPT2Config:
    return GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=1024)


def checkpoints(config: GPT2Config) -> dict[str, Path]:
    """The base and two specialists for ``config``, built once and cached by its hash."""
    key = hashlib.sha256(config.to_json_string().encode()).hexdigest()[:12]
    root = RESULTS / f"lazy-{key}"
    dirs = {name: root / name for name in ("base", "math", "shop")}
    for seed, path in enumerate(dirs.values()):
        if not (path / "model.safetensors").is_file():
            random_checkpoint(path, config, seed)
    return dirs


def ecosystem(data_dir: Path, dirs: dict[str, Path]) -> Runtime:
    """A causal-lm ecosystem of the two specialists with one exact-match task of a few prompts."""
    runtime = open_runtime(Settings(data_dir=data_dir))
    setup.create(runtime, "causal-lm", {"base": str(dirs["base"]), "max_new_tokens": 4})
    tasks.create_task(runtime, name="math", scoring="exact_match")
    tasks.add_feedback(runtime, "math", [{"inputs": p, "target": t, "pool": "fitness"} for p, t in PROMPTS])
    for name in ("math", "shop"):
        register(runtime, dirs[name], name=name, registered_by="benchmarks.lazy")
    return runtime


def time_steps(runtime: Runtime, repeats: int) -> dict[str, list[float]]:
    """Seconds per child: angle pass, merge+write, load (build), score; the merge alone; a read of both parents.

    The pair's angle is measured once (the first child) and remembered, as the evolver remembers it for
    archive members: ``merge_write`` is a merge of a pair seen before, ``angle`` what a new pair adds.
    """
    with runtime.sessions() as session:
        family, config, space = runtime.family(session)
        parents = store.list_models(session)
    genomes = genome_store(runtime, family, space)
    a, b = (genomes.load(m) for m in parents)
    inputs, targets = [p for p, _ in PROMPTS], [t for _, t in PROMPTS]
    generator = torch.Generator().manual_seed(0)
    parts = ("angle", "merge_write", "load", "score", "merge_only", "read_parents")
    times: dict[str, list[float]] = {part: [] for part in parts}
    read_both(a, b)  # warm the page cache: the bound is a read from memory, not from disk
    genomes.genomes.release(genomes.genomes.child(a, b, 0.5, 0, 0.0, generator))  # the angle, remembered
    for _ in range(repeats):
        start = time.perf_counter()
        read_both(a, b)
        times["read_parents"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cos = global_cosine(a, b, space)
        times["angle"].append(time.perf_counter() - start)
        split = int(torch.randint(0, space.dim, (), generator=generator))
        ratio = float(torch.rand((), generator=generator))
        start = time.perf_counter()
        for _ in split_slerp_tensors(a, b, space, ratio, split, cos):  # no hashing, no writing
            pass
        times["merge_only"].append(time.perf_counter() - start)
        start = time.perf_counter()
        child = genomes.genomes.child(a, b, ratio, split, 0.0, generator)
        times["merge_write"].append(time.perf_counter() - start)
        start = time.perf_counter()
        module = family.build(config, child, "cpu")
        times["load"].append(time.perf_counter() - start)
        start = time.perf_counter()
        family.score(module, config, inputs, targets, "exact_match")
        times["score"].append(time.perf_counter() - start)
        del module
        genomes.genomes.release(child)
    return times


def read_both(a: SafetensorsSource, b: SafetensorsSource) -> int:
    """Read every tensor of both parents once, one at a time (what a merge must at least do)."""
    n = 0
    for spec in a.space:
        n += a.get(spec.name).numel() + b.get(spec.name).numel()
    return n


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (reported in kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def probe(data_dir: Path, steps: int = 2) -> dict[str, int]:
    """In this process: a warm-up tick, then the RSS before and the peak during one tick of ``steps`` steps."""
    torch.set_num_threads(1)
    runtime = open_runtime(Settings(data_dir=data_dir))
    evolver = Evolver(runtime)
    evolver.tick(steps=1)  # scores the archive and loads every library
    gc.collect()
    before = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    report = evolver.tick(steps=steps)
    return {"before": before, "peak": status_bytes("VmHWM"), "steps": report.steps}


def probe_in_subprocess(data_dir: Path) -> dict[str, int]:
    """``probe`` in a fresh interpreter, with glibc's mmap threshold fixed.

    glibc otherwise keeps the warm-up tick's freed tensors in its heap and the measured tick reuses them
    unseen; with a fixed threshold every tensor is mapped and unmapped, as the bound counts it.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "benchmarks.lazy", "--probe", str(data_dir)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=1200)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_bound(runtime: Runtime) -> dict[str, int]:
    """One model in float32, its largest tensor, and the bound they make with the fixed overhead."""
    with runtime.sessions() as session:
        space = runtime.family(session)[2]
    model, largest = space.dim * 4, max(spec.numel for spec in space) * 4
    return {"model": model, "largest_tensor": largest, "bound": model + 2 * largest + FIXED_OVERHEAD}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe", type=Path, metavar="DATA_DIR", help="only measure one tick's peak RSS there")
    args = parser.parse_args()
    if args.probe is not None:
        print(json.dumps(probe(args.probe)))
        return
    torch.set_num_threads(1)
    dirs = checkpoints(gpt2(args.layers, args.hidden, args.heads, args.vocab))
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        runtime = ecosystem(Path(tmp) / "data", dirs)
        bound = memory_bound(runtime)
        times = time_steps(runtime, args.repeats)
        runtime.close()
        memory = probe_in_subprocess(Path(tmp) / "data")
    median = {k: statistics.median(v) for k, v in times.items()}
    mib, read = 2**20, median["read_parents"]
    print(f"parameters: {bound['model'] // 4:,}; model {bound['model'] / mib:.0f} MiB (float32)")
    for part in ("angle", "merge_write", "load", "score"):
        print(f"{part:>12}: {median[part]:.2f} s (median of {args.repeats})")
    step = median["merge_write"] + median["load"] + median["score"]
    print(f"{'step':>12}: {step:.2f} s for a pair seen before, {step + median['angle']:.2f} s for a new pair")
    print(f"plain read of both parents: {read:.2f} s")
    print(
        f"merge alone (no hash, no write): {median['merge_only']:.2f} s = {median['merge_only'] / read:.2f}x the read"
    )
    print(f"merge+hash+write: {median['merge_write']:.2f} s = {median['merge_write'] / read:.2f}x the read")
    extra = memory["peak"] - memory["before"]
    print(f"extra peak RSS of one tick: {extra / mib:.0f} MiB; bound {bound['bound'] / mib:.0f} MiB")
    result = {
        "benchmark": "lazy",
        "seconds": median,
        "merge_write_over_read": median["merge_write"] / read,
        "merge_over_read": median["merge_only"] / read,
        "extra_peak_rss": extra,
        **bound,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
