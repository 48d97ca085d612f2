"""Merge speed and memory against mergekit: SLERP and TIES of GPT-2-medium-sized checkpoints, file to file.

    python -m benchmarks.merge                       # 24 layers, 1024 wide, 50,257 tokens: 1.4 GB a checkpoint
    python -m benchmarks.merge --layers 2 --rounds 1  # a quick look

A base and two fine-tunes of it (base plus small random task vectors) are built locally and cached
under ``--cache``; mergekit is installed into its own virtual environment there (never into this
package's). Each round runs, one process each and interleaved, for SLERP then TIES: the plain
read-and-write bound (``benchmarks.read_write``), this library (``benchmarks.merge_jobs``) and
``mergekit-yaml``; wall time and peak RSS come from ``wait4``. The library fsyncs what it writes,
mergekit does not, so mergekit's time includes an fsync of its output. The inputs are read once
before the first round, so every run reads them from the page cache. The first round's outputs are
compared tensor by tensor; every output is deleted after its round.
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2Config

from benchmarks.hf import random_checkpoint
from benchmarks.merge_jobs import SLERP_T, TIES_DENSITY
from m2n2.checkpoint import SafetensorsSource, write_safetensors
from m2n2.methods.ties import kth_largest

ROOT = Path(__file__).parents[1]
CACHE = ROOT / "benchmarks" / "results" / "cache"
MERGEKIT = "mergekit==0.1.5"
TORCH = "torch==2.13.0"  # the CPU build; mergekit asks only for torch>=2.0
# No GPU, nothing beyond the model file: the library writes only the safetensors file either.
MERGEKIT_OPTIONS = ["--no-cuda", "--no-copy-tokenizer", "--no-write-model-card", "--quiet"]
TASK_VECTOR_STD = 0.004  # a fine-tune moves each weight by about a fifth of its N(0, 0.02^2) init
RTOL, ATOL = 1e-5, 1e-6


def gpt2(layers: int, hidden: int, heads: int, vocab: int) -> GPT2Config:
    # mergekit picks its tensor layout from ``architectures``, as save_pretrained records it.
    return GPT2Config(
        vocab_size=vocab,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=1024,
        architectures=["GPT2LMHeadModel"],
    )


def checkpoints(config: GPT2Config, cache: Path) -> dict[str, Path]:
    """Model directories of a random base and two fine-tunes of it, built once and cached by the config's hash."""
    key = hashlib.sha256(f"{config.to_json_string()}{TASK_VECTOR_STD}".encode()).hexdigest()[:12]
    root = cache / f"merge-{key}"
    dirs = {name: root / name for name in ("base", "a", "b")}
    if not (dirs["base"] / "model.safetensors").is_file():
        random_checkpoint(dirs["base"], config, seed=0)
    for seed, name in ((1, "a"), (2, "b")):
        if not (dirs[name] / "model.safetensors").is_file():
            fine_tune(dirs["base"], dirs[name], seed)
    return dirs


def fine_tune(base: Path, directory: Path, seed: int) -> None:
    """``base`` plus N(0, TASK_VECTOR_STD^2) on every weight, streamed tensor by tensor."""
    directory.mkdir(parents=True, exist_ok=True)
    source = SafetensorsSource(base / "model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    tensors = (
        (s.name, source.get(s.name) + TASK_VECTOR_STD * torch.randn(s.shape, generator=generator)) for s in source.space
    )
    write_safetensors(directory / "model.safetensors", source.space, tensors, {"format": "pt"})
    GPT2Config.from_pretrained(base).save_pretrained(directory)


def mergekit(cache: Path) -> Path:
    """``mergekit-yaml`` from its own virtual environment under ``cache``, created on first use."""
    venv = cache / "mergekit-venv"
    command = venv / "bin" / "mergekit-yaml"
    if not command.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, TORCH, MERGEKIT], check=True)
    return command


def mergekit_configs(dirs: dict[str, Path], where: Path) -> dict[str, Path]:
    """mergekit YAML configs (JSON is YAML) for the same SLERP and TIES the library jobs run."""
    slerp = {
        "merge_method": "slerp",
        "base_model": str(dirs["a"]),  # mergekit's t = 0 end
        "models": [{"model": str(dirs["a"])}, {"model": str(dirs["b"])}],
        "parameters": {"t": SLERP_T},
        "dtype": "float32",
        "out_dtype": "float32",
    }
    ties = {
        "merge_method": "ties",
        "base_model": str(dirs["base"]),
        "models": [{"model": str(dirs[n]), "parameters": {"density": TIES_DENSITY, "weight": 1.0}} for n in "ab"],
        "parameters": {"normalize": True},
        "dtype": "float32",
        "out_dtype": "float32",
    }
    paths = {"slerp": where / "slerp.yml", "ties": where / "ties.yml"}
    for name, config in (("slerp", slerp), ("ties", ties)):
        paths[name].write_text(json.dumps(config, indent=2))
    return paths


# Runs argv[1:] and prints its wall seconds and peak RSS (kB). A child's peak RSS counts the memory of
# the process it was spawned from (Linux carries the old image's high-water mark across exec), so the
# timed command is spawned from this small interpreter, never from the benchmark's own large one.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measured(argv: list[str], log: Path) -> tuple[float, int]:
    """Run ``argv`` to completion: (wall seconds, peak RSS in bytes)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as err:
        out = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err
        )
    if out.returncode != 0:
        raise RuntimeError(f"launching {argv[0]} failed: {log.read_text()[-2000:]}")
    seconds, rss_kb, code = out.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {code}: {log.read_text()[-2000:]}")
    return float(seconds), int(rss_kb) * 1024


def fsync_files(directory: Path) -> None:
    """Make every file in ``directory`` durable (what the library does to its own output before returning)."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def safetensors_in(directory: Path) -> Path:
    """The one safetensors file mergekit wrote into ``directory``."""
    found = sorted(directory.glob("*.safetensors"))
    if len(found) != 1:
        raise RuntimeError(f"expected one safetensors file in {directory}, found {[p.name for p in found]}")
    return found[0]


def agreement(ours: Path, theirs: Path, explain: Callable[[str, torch.Tensor], bool] | None = None) -> dict:
    """How far two merged files are apart: the largest absolute difference, and the entries beyond RTOL/ATOL.

    ``explain(name, positions)`` says whether the differing entries of tensor ``name`` (flat positions)
    are ones the two definitions may legitimately decide differently.
    """
    a, b = SafetensorsSource(ours), SafetensorsSource(theirs)
    names, other = [s.name for s in a.space], {s.name for s in b.space}
    if set(names) != other:
        raise RuntimeError(
            f"outputs hold different tensors: ours only {set(names) - other}, theirs only {other - set(names)}"
        )
    max_abs, differing, explained = 0.0, 0, True
    for name in names:
        x, y = a.get(name).float().reshape(-1), b.get(name).float().reshape(-1)
        diff = (x - y).abs()
        max_abs = max(max_abs, float(diff.max()))
        positions = (diff > ATOL + RTOL * y.abs()).nonzero().squeeze(1)
        differing += positions.numel()
        if positions.numel():
            explained = explained and explain is not None and explain(name, positions)
    return {
        "max_abs_diff": max_abs,
        "elements": a.space.dim,
        "beyond_tolerance": differing,
        "beyond_tolerance_explained": explained,
        "tensors": len(names),
    }


def trim_ties(dirs: dict[str, Path], density: float) -> Callable[[str, torch.Tensor], bool]:
    """Whether every given entry has, in some task vector, a magnitude equal to that vector's trim threshold.

    There the two TIES implementations keep different ones of several equally large entries: the
    library the first ones in position order, mergekit whichever its unstable sort puts first.
    """
    sources = {n: SafetensorsSource(d / "model.safetensors") for n, d in dirs.items()}

    def at_threshold(name: str, positions: torch.Tensor) -> bool:
        base = sources["base"].get(name).float().reshape(-1)
        tied = torch.zeros(positions.numel(), dtype=torch.bool)
        for model in ("a", "b"):
            magnitude = (sources[model].get(name).float().reshape(-1) - base).abs()
            threshold = kth_largest(magnitude, max(1, round(density * magnitude.numel())))
            tied |= magnitude[positions] == threshold
        return bool(tied.all())

    return at_threshold


def warm(paths: list[Path]) -> None:
    """Read ``paths`` once so every timed run reads them from the page cache."""
    for path in paths:
        with path.open("rb", buffering=0) as f:
            while f.read(16 << 20):
                pass


def jobs(dirs: dict[str, Path], configs: dict[str, Path], mk: Path, out: Path) -> dict[str, Callable[[], list[str]]]:
    """Each timed job's command line, writing under ``out``; interleaved in this order."""
    files = {name: str(d / "model.safetensors") for name, d in dirs.items()}
    py = [sys.executable, "-m"]
    return {
        "bound-slerp": lambda: [*py, "benchmarks.read_write", str(out / "bound-slerp"), files["a"], files["b"]],
        "ours-slerp": lambda: [*py, "benchmarks.merge_jobs", "slerp", str(out / "ours-slerp"), files["a"], files["b"]],
        "ours-crossover": lambda: [
            *py,
            "benchmarks.merge_jobs",
            "crossover",
            str(out / "ours-crossover"),
            files["a"],
            files["b"],
        ],
        "mergekit-slerp": lambda: [str(mk), str(configs["slerp"]), str(out / "mergekit-slerp"), *MERGEKIT_OPTIONS],
        "bound-ties": lambda: [
            *py,
            "benchmarks.read_write",
            str(out / "bound-ties"),
            files["base"],
            files["a"],
            files["b"],
        ],
        "ours-ties": lambda: [
            *py,
            "benchmarks.merge_jobs",
            "ties",
            str(out / "ours-ties"),
            files["base"],
            files["a"],
            files["b"],
        ],
        "mergekit-ties": lambda: [str(mk), str(configs["ties"]), str(out / "mergekit-ties"), *MERGEKIT_OPTIONS],
    }


def run_rounds(dirs: dict[str, Path], mk: Path, rounds: int, work: Path) -> tuple[dict, dict, dict]:
    """Every job once per round, interleaved: (seconds per job, peak RSS per job, first round's agreement)."""
    configs = mergekit_configs(dirs, work)
    seconds: dict[str, list[float]] = {}
    rss: dict[str, list[int]] = {}
    fsync: list[float] = []
    checks: dict[str, dict[str, object]] = {}
    warm([d / "model.safetensors" for d in dirs.values()])
    for r in range(rounds):
        out = work / f"round-{r}"
        out.mkdir()
        for name, argv in jobs(dirs, configs, mk, out).items():
            s, m = measured(argv(), work / f"{name}.log")
            if name.startswith("mergekit"):
                start = time.perf_counter()
                fsync_files(out / name)
                fsync.append(time.perf_counter() - start)
                s += fsync[-1]
            seconds.setdefault(name, []).append(s)
            rss.setdefault(name, []).append(m)
            print(f"round {r + 1}/{rounds} {name:>15}: {s:6.2f} s, peak RSS {m / 2**20:6.0f} MiB", flush=True)
        if r == 0:
            for method in ("slerp", "ties"):
                explain = trim_ties(dirs, TIES_DENSITY) if method == "ties" else None
                checks[method] = agreement(out / f"ours-{method}", safetensors_in(out / f"mergekit-{method}"), explain)
        for path in sorted(out.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        out.rmdir()
    seconds["mergekit-fsync"] = fsync
    return seconds, rss, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    dirs = checkpoints(gpt2(args.layers, args.hidden, args.heads, args.vocab), args.cache)
    mk = mergekit(args.cache)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        seconds, rss, checks = run_rounds(dirs, mk, args.rounds, Path(tmp))
    time_ = {k: statistics.median(v) for k, v in seconds.items()}
    peak = {k: int(statistics.median(v)) for k, v in rss.items()}
    size = (dirs["a"] / "model.safetensors").stat().st_size
    print(f"\ncheckpoint: {size / 1e9:.2f} GB each; medians of {args.rounds} interleaved rounds, inputs in page cache")
    print(f"{'job':>15} | {'seconds':>7} | {'peak RSS MiB':>12} | {'x bound':>7} | {'time vs mergekit':>16}")
    ratios: dict[str, dict[str, float]] = {}
    for name in peak:
        method = name.split("-")[1] if name != "ours-crossover" else "slerp"
        over_bound = time_[name] / time_[f"bound-{method}"]
        vs_mk = time_[name] / time_[f"mergekit-{method}"]
        ratios[name] = {
            "over_bound": over_bound,
            "over_mergekit": vs_mk,
            "rss_over_mergekit": peak[name] / peak[f"mergekit-{method}"],
        }
        print(f"{name:>15} | {time_[name]:7.2f} | {peak[name] / 2**20:12.0f} | {over_bound:7.2f} | {vs_mk:16.2f}")
    print(f"mergekit's output fsync, included above: {time_['mergekit-fsync']:.2f} s (median)")
    for method, check in checks.items():
        print(
            f"{method}: ours against mergekit, max |diff| {check['max_abs_diff']:.3g}; "
            f"{check['beyond_tolerance']} of {check['elements']:,} entries beyond rtol {RTOL}, atol {ATOL}"
            + (
                " (all at a tied trim threshold)"
                if check["beyond_tolerance"] and check["beyond_tolerance_explained"]
                else ""
            )
        )
    result = {
        "benchmark": "merge",
        "checkpoint_bytes": size,
        "rounds": args.rounds,
        "inputs_warm": True,
        "mergekit": MERGEKIT,
        "seconds": time_,
        "peak_rss": peak,
        "ratios": ratios,
        "agreement": checks,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
