"""The extra peak RSS of one lazy evolution step stays below one model plus two of its largest tensors.

The checkpoint is large enough (over 400 MB in float32) that holding both parents, or the child
next to the built model, would break the bound by hundreds of megabytes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from hf_models import train_tokenizer
from transformers import AutoModelForCausalLM, GPT2Config

from ecosystem import setup, tasks
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import register
from m2n2.checkpoint import write_safetensors
from m2n2.space import ParamSpace

FIXED_OVERHEAD = 160 * 1024**2  # activations of a few short prompts, allocator slack, per-step bookkeeping
CONFIG = GPT2Config(vocab_size=8192, n_embd=1024, n_layer=8, n_head=16, n_positions=128)  # 110M parameters


def write_checkpoint(directory: Path, seed: int) -> ParamSpace:
    """A GPT-2 directory with random float32 weights, written one tensor at a time."""
    directory.mkdir(parents=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(CONFIG)
    tied = set(model._tied_weights_keys or ())
    specs = [(n, tuple(t.shape), torch.float32) for n, t in model.state_dict().items() if n not in tied]
    space = ParamSpace(specs)
    generator = torch.Generator().manual_seed(seed)
    tensors = ((name, 0.02 * torch.randn(shape, generator=generator)) for name, shape, _ in specs)
    write_safetensors(directory / "model.safetensors", space, tensors, {"format": "pt"})
    CONFIG.save_pretrained(directory)
    train_tokenizer().save_pretrained(directory)
    return space


def test_one_lazy_step_stays_within_one_model_and_two_tensors(tmp_path: Path, settings_env) -> None:
    space = write_checkpoint(tmp_path / "base", seed=0)
    write_checkpoint(tmp_path / "math", seed=1)
    write_checkpoint(tmp_path / "shop", seed=2)
    model_bytes = space.dim * 4
    assert model_bytes > 400 * 1024**2
    data_dir = tmp_path / "data"
    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        setup.create(runtime, "causal-lm", {"base": str(tmp_path / "base"), "max_new_tokens": 2})
        tasks.create_task(runtime, name="math", scoring="exact_match")
        points = [{"inputs": f"{a} plus {a} is", "target": str(2 * a)} for a in range(4)]
        tasks.add_feedback(runtime, "math", [{**p, "pool": "fitness"} for p in points])
        for name in ("math", "shop"):
            register(runtime, tmp_path / name, name=name, registered_by="test")
    finally:
        runtime.close()
    probe = Path(__file__).with_name("memory_step.py")
    # A fixed mmap threshold: glibc otherwise keeps freed tensors of the warm-up tick in its heap, and the
    # measured step would reuse them unseen. With it, every tensor's memory is mapped and unmapped, as counted.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, str(probe), str(data_dir)], capture_output=True, text=True, env=env, check=True, timeout=600
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    largest = max(spec.numel for spec in space) * 4
    extra = measured["peak"] - measured["before"]
    bound = model_bytes + 2 * largest + FIXED_OVERHEAD
    print(f"extra {extra / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB, model {model_bytes / 2**20:.0f} MiB")
    assert measured["steps"] == 2
    assert extra < bound, f"one step added {extra / 2**20:.0f} MiB; bound {bound / 2**20:.0f} MiB"
