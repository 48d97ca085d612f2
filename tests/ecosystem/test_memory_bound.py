"""The extra peak RSS of one lazy evolution step stays below one model plus two of its largest tensors.

The checkpoint is large enough (over 400 MB in float32) that holding both parents, or the child
next to the built model, would break the bound by hundreds of megabytes.
"""

from pathlib import Path

from benchmarks.hf import random_checkpoint
from benchmarks.lazy import ecosystem, gpt2, memory_bound, probe_in_subprocess


def test_one_lazy_step_stays_within_one_model_and_two_tensors(tmp_path: Path, settings_env) -> None:
    config = gpt2(layers=8, hidden=1024, heads=16, vocab=8192)  # 110M parameters
    dirs = {name: tmp_path / name for name in ("base", "math", "shop")}
    for seed, path in enumerate(dirs.values()):
        random_checkpoint(path, config, seed)
    runtime = ecosystem(tmp_path / "data", dirs)
    bound = memory_bound(runtime)
    runtime.close()
    assert bound["model"] > 400 * 1024**2
    measured = probe_in_subprocess(tmp_path / "data")
    extra = measured["peak"] - measured["before"]
    assert measured["steps"] == 2
    assert bound["model"] < extra < bound["bound"], f"one step added {extra / 2**20:.0f} MiB; {bound}"
