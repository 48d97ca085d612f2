"""A base language model and two light fine-tunes of it, built locally from a seed and cached by config.

``build(config, cache)`` returns three ``save_pretrained`` directories, ``base``, ``math`` and ``shop``,
each with the same locally trained byte-level BPE tokenizer (the ``tokenizers`` library; nothing is
downloaded). The base is a small ``LlamaForCausalLM`` pre-trained on ``text_data.pretraining_text``;
each specialist continues from it on its skill's train split with a small learning rate for a few
steps, optionally only in some layers: the regime of the paper's pair (two light fine-tunes of one
base), where the specialists stay close enough for a merge to keep both skills.

Builds are deterministic for a config (fixed seeds, steps not seconds) and cached under
``cache``, keyed by digests of the config; a directory is complete once its ``build.json`` exists.
"""

import hashlib
import json
import logging
import math
import multiprocessing
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from ecosystem import text_data

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
# The chat routes' prompt: the messages' contents in order, so a user message holding a task prompt
# ("Question: ...\nAnswer:") reaches the model as the completion route would send it.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
MARKER = "build.json"


class TextBuildConfig(BaseModel):
    """Everything a build depends on; its digest names the cache directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    vocab_size: int = Field(512, ge=300)
    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=8)
    context: int = Field(128, ge=64)
    pretrain_docs: int = Field(20_000, ge=1)
    answered_share: float = Field(0.4, ge=0, le=1)  # answered examples of both skills in the pre-training mix
    pretrain_steps: int = Field(1000, ge=0)
    pretrain_lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    finetune_examples: int = Field(4000, ge=1)
    finetune_steps: int = Field(150, ge=0)
    finetune_lr: float = Field(5e-4, gt=0)
    # Which decoder layers a fine-tune trains (all when None); embeddings, final norm and head stay frozen then.
    finetune_layers: dict[str, list[int]] | None = None

    def digest(self) -> str:
        """Names the whole build."""
        return _digest(self.model_dump())

    def pretraining_digest(self) -> str:
        """Names the base: the fields before the fine-tune settings."""
        fields = self.model_dump(exclude={n for n in type(self).model_fields if n.startswith("finetune")})
        return _digest(fields)


def _digest(fields: dict) -> str:
    """The fields and the data generators' version, hashed: a cache key."""
    key = json.dumps({**fields, "data_version": text_data.VERSION}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# A build that takes seconds: for tests and for trying the demo; its specialists are barely trained.
TINY = TextBuildConfig(
    vocab_size=320,
    hidden_size=32,
    layers=2,
    heads=2,
    intermediate_size=64,
    context=192,  # the small vocabulary makes prompts longer
    pretrain_docs=300,
    pretrain_steps=20,
    batch_size=8,
    finetune_examples=64,
    finetune_steps=10,
)
# The full-size build: a few million parameters, minutes on two cores.
FULL = TextBuildConfig()


def build(config: TextBuildConfig, cache: Path, processes: int = 2) -> dict[str, Path]:
    """The ``base``, ``math`` and ``shop`` model directories for ``config``, built unless cached.

    The base is cached under its pre-training settings alone, so specialists of other fine-tune
    settings start from the same base without pre-training again. With ``processes`` > 1 the two
    fine-tunes run side by side, one torch thread each (starting a process costs seconds).
    """
    cache = Path(cache)
    base = _cached(cache / f"text-base-{config.pretraining_digest()}", lambda d: _pretrain(config, d))
    tuned = _cached(cache / f"text-tuned-{config.digest()}", lambda d: _finetune(config, base / "model", d, processes))
    return {"base": base / "model", **{skill: tuned / skill for skill in text_data.SKILLS}}


def build_seconds(paths: dict[str, Path]) -> dict[str, float]:
    """How long each part of a build took when it was built: wall and CPU seconds of base, math and shop."""
    base = json.loads((paths["base"].parent / MARKER).read_text())["seconds"]
    tuned = json.loads((paths["math"].parent / MARKER).read_text())["seconds"]
    return {**base, **tuned}


def _cached(root: Path, make: Callable[[Path], dict[str, float]]) -> Path:
    """``root``, made by ``make`` in a staging directory unless its marker says it is complete."""
    if (root / MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".text-"))
    try:
        start = time.perf_counter()
        seconds = make(staging)
        log.info("built %s in %.0f s", root.name, time.perf_counter() - start)
        (staging / MARKER).write_text(json.dumps({"seconds": seconds}, indent=1))
        if root.exists():  # an incomplete earlier build
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _pretrain(config: TextBuildConfig, root: Path) -> dict[str, float]:
    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    corpus = text_data.pretraining_text(config.pretrain_docs, config.seed, config.answered_share)
    tokenizer = train_tokenizer(config.vocab_size, corpus)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_config(_llama_config(config, tokenizer))
    rows = _packed(tokenizer, corpus, config.context)
    _train(model, rows, config.pretrain_steps, config.pretrain_lr, config.batch_size, config.seed, tokenizer)
    _save(model, tokenizer, root / "model")
    return {"base": time.perf_counter() - start, "base_cpu": time.process_time() - cpu}


def _finetune(config: TextBuildConfig, base: Path, root: Path, processes: int) -> dict[str, float]:
    """Both specialists, in ``processes`` worker processes (in this one when 1)."""
    skills = text_data.SKILLS
    args = ([config] * len(skills), [base] * len(skills), [root] * len(skills), skills)
    if processes <= 1:
        parts = list(map(_finetune_one, *args))
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            parts = list(pool.map(_finetune_one, *args))
    return {k: v for part in parts for k, v in part.items()}


def _finetune_one(config: TextBuildConfig, base: Path, root: Path, skill: str) -> dict[str, float]:
    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base)
    tuned = AutoModelForCausalLM.from_pretrained(base)
    layers = None if config.finetune_layers is None else config.finetune_layers.get(skill)
    _freeze_except(tuned, layers)
    examples = text_data.training_examples(skill, config.finetune_examples, config.seed)
    rows = [_answer_row(tokenizer, ex.prompt, ex.answer, config.context) for ex in examples]
    _train(tuned, rows, config.finetune_steps, config.finetune_lr, config.batch_size, config.seed + 1, tokenizer)
    _save(tuned.requires_grad_(True), tokenizer, root / skill)
    return {skill: time.perf_counter() - start, f"{skill}_cpu": time.process_time() - cpu}


def train_tokenizer(vocab_size: int, corpus: Sequence[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with EOS doubling as BOS and pad, as GPT-2's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, bos_token=EOS)


def _llama_config(config: TextBuildConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    eos = tokenizer.eos_token_id
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.context,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        architectures=["LlamaForCausalLM"],
    )


def _packed(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str], context: int) -> list[tuple[list, list]]:
    """The documents joined by EOS and cut into rows of ``context`` tokens (no padding to pay for)."""
    stream = [t for ids in tokenizer(list(docs))["input_ids"] for t in [*ids, tokenizer.eos_token_id]]
    rows = [stream[i : i + context] for i in range(0, len(stream) - context + 1, context)]
    return [(row, row) for row in rows]


def _answer_row(tokenizer: PreTrainedTokenizerFast, prompt: str, answer: str, context: int) -> tuple[list, list]:
    """Token ids of prompt + answer + EOS, and labels that count the answer and EOS only (as scoring reads it)."""
    n_prompt = len(tokenizer(prompt)["input_ids"])
    ids = tokenizer(prompt + answer)["input_ids"] + [tokenizer.eos_token_id]
    labels = [-100] * n_prompt + ids[n_prompt:]
    return ids[-context:], labels[-context:]


def _freeze_except(model: torch.nn.Module, layers: list[int] | None) -> None:
    """Train only the decoder layers listed (everything when ``layers`` is None)."""
    if layers is None:
        return
    model.requires_grad_(False)
    for i in layers:
        model.model.layers[i].requires_grad_(True)


def _train(
    model: torch.nn.Module,
    rows: list[tuple[list[int], list[int]]],
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    """AdamW on shuffled right-padded batches, linear warm-up then cosine decay; ``steps`` optimizer steps."""
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / max(1, steps))),
    )
    model.train()
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        batch, order = [rows[i] for i in order[:batch_size]], order[batch_size:]
        width = max(len(ids) for ids, _ in batch)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in batch])  # (b, t)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])  # (b, t)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in batch])  # (b, t)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("step %d/%d: loss %.3f", step + 1, steps, loss.item())
    model.eval()


def _save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
