"""Hugging Face checkpoints built locally from a config: random weights written tensor by tensor, a small tokenizer.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a few sentences (every byte is
a token, so any text encodes), and the weights are drawn from a seeded generator straight into a
safetensors file, so a checkpoint of hundreds of megabytes never sits in memory whole.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast

from ecosystem import text_build
from m2n2.checkpoint import write_safetensors
from m2n2.space import ParamSpace

EOS = text_build.EOS
# Words, digits, arithmetic and a few non-ASCII characters, so the merges cover typical prompts.
CORPUS = (
    "Question: what is two plus three? Answer: #### 5",
    "Question: what is ten minus four? Answer: #### 6",
    "Question: what is six times seven? Answer: #### 42",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 1,000 3.5",
    "user: hello there\nassistant: hello, how can I help you today?",
    "Once upon a time there was a small model that learned to add numbers.",
    "Evolution merges models: split point, mixing ratio, attraction and competition.",
    "Un café, s'il vous plaît. Größe: 5 µm. 日本語のテキスト。",
)


def train_tokenizer(vocab_size: int = 320, corpus: Sequence[str] = CORPUS) -> PreTrainedTokenizerFast:
    """The text demo's byte-level BPE tokenizer, trained on a small multilingual corpus by default."""
    return text_build.train_tokenizer(vocab_size, corpus)


def checkpoint_space(config: PretrainedConfig) -> ParamSpace:
    """The tensors ``save_pretrained`` would write for ``config`` (tied duplicates left out), in float32."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tied = set(model._tied_weights_keys or ())
    return ParamSpace([(n, tuple(t.shape), torch.float32) for n, t in model.state_dict().items() if n not in tied])


def random_checkpoint(directory: Path, config: PretrainedConfig, seed: int, std: float = 0.02) -> ParamSpace:
    """A model directory as ``save_pretrained`` lays it out, with N(0, std^2) weights and a local tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    space = checkpoint_space(config)
    generator = torch.Generator().manual_seed(seed)
    tensors = ((spec.name, std * torch.randn(spec.shape, generator=generator)) for spec in space)
    write_safetensors(directory / "model.safetensors", space, tensors, {"format": "pt"})
    config.save_pretrained(directory)
    train_tokenizer().save_pretrained(directory)
    return space
