"""A causal-lm ecosystem built locally in seconds: a random Llama base, two specialists, two tasks.

Nothing is downloaded: the checkpoints are seeded random weights and the tokenizer is trained here
(``benchmarks.hf``). The two tasks (arithmetic and chat) are scored by target likelihood, so random
models get graded, distinct scores and evolution has niches to fill. The Ray tests build it tiny; the
Ray benchmark builds it larger, so that scoring, not bookkeeping, dominates an evaluation.
"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from benchmarks.hf import train_tokenizer
from ecosystem import setup, tasks
from ecosystem.runtime import open_runtime
from ecosystem.settings import EvolutionSettings, Settings
from ecosystem.specialists import register

WORDS = ("hello", "thanks", "goodbye", "yes", "no", "maybe", "sure", "welcome", "sorry", "great", "fine", "okay")


def arithmetic(n: int) -> list[dict[str, str]]:
    """``n`` sums in GSM8K's answer format."""
    return [
        {"inputs": f"Question: what is {a} plus {b}? Answer:", "target": f" #### {a + b}"}
        for a, b in ((i % 7 + 1, i // 7 + 2) for i in range(n))
    ]


def chat(n: int) -> list[dict[str, str]]:
    """``n`` one-word replies."""
    return [
        {"inputs": f"user: say {WORDS[i % len(WORDS)]} {i}\nassistant:", "target": f" #### {WORDS[i % len(WORDS)]}"}
        for i in range(n)
    ]


def llama(hidden: int, layers: int, vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )


def checkpoint(directory: Path, config: LlamaConfig, tokenizer: PreTrainedTokenizerFast, seed: int, std: float) -> Path:
    """A random model with N(0, std^2) weights, saved as a fine-tune on the hub is laid out."""
    torch.manual_seed(seed)
    config.initializer_range = std
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def text_ecosystem(
    root: Path, hidden: int = 32, layers: int = 2, points_per_task: int = 4, archive_size: int = 4
) -> Path:
    """Build the ecosystem under ``root`` (models in ``root/models``); returns its data directory.

    The archive is small by default, so a few steps fill it and children compete for slots.
    """
    tokenizer = train_tokenizer()
    config = llama(hidden, layers, len(tokenizer))
    models = root / "models"
    checkpoint(models / "base", config, tokenizer, seed=0, std=0.02)
    data_dir = root / "data"
    runtime = open_runtime(Settings(data_dir=data_dir, evolution=EvolutionSettings(archive_size=archive_size)))
    try:
        setup.create(runtime, "causal-lm", {"base": str(models / "base")})
        for seed in (1, 2):  # larger weights than the base, so the specialists' outputs differ
            checkpoint(models / f"lm-{seed}", config, tokenizer, seed=seed, std=0.2)
            register(
                runtime,
                models / f"lm-{seed}",
                name=f"lm-{seed}",
                registered_by="benchmarks",
                source="random",
                licence="MIT",
            )
        for name, points in (("arithmetic", arithmetic(points_per_task)), ("chat", chat(points_per_task))):
            tasks.create_task(runtime, name=name, scoring="likelihood", gate_share=0.0)
            tasks.add_feedback(runtime, name, points)
    finally:
        runtime.close()
    return data_dir
