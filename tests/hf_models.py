"""Tiny Hugging Face causal LMs built locally in seconds (nothing is downloaded).

``tiny_llama(directory)`` and ``tiny_gpt2(directory)`` write a random model with ``save_pretrained`` plus a
byte-level BPE tokenizer trained here with the ``tokenizers`` library, so ``AutoModelForCausalLM`` and
``AutoTokenizer`` load the directory as they would a hub download. Llama keeps ``lm_head`` separate and has
a chat template; GPT-2 ties ``lm_head`` to ``wte`` (absent from the checkpoint) and has no chat template.
"""

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

from benchmarks.hf import CORPUS, train_tokenizer
from ecosystem import setup, tasks
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import register

# A minimal chat template in the Jinja dialect transformers renders.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def metaspace_tokenizer(vocab_size: int = 120, corpus: Sequence[str] = CORPUS) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE tokenizer (``▁`` marks spaces), whose decoder drops a sequence's leading space."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>")


def save_model(
    directory: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast | None,
    max_shard_size: str | None = None,
) -> Path:
    """``save_pretrained`` the model (and tokenizer), as a fine-tune published on the hub is laid out."""
    directory.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def llama_config(vocab_size: int, **overrides: object) -> LlamaConfig:
    """A two-layer Llama with grouped-query attention and an untied ``lm_head``."""
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        architectures=["LlamaForCausalLM"],
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def gpt2_config(vocab_size: int, **overrides: object) -> GPT2Config:
    """A two-layer GPT-2 whose ``lm_head`` is tied to ``wte``."""
    fields = dict(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=0,
        eos_token_id=0,
        architectures=["GPT2LMHeadModel"],
    )
    fields.update(overrides)
    return GPT2Config(**fields)


def random_model(config: LlamaConfig | GPT2Config, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM (a larger init than the default, so greedy outputs vary with the seed)."""
    torch.manual_seed(seed)
    config.initializer_range = 0.2
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_llama(directory: Path, seed: int = 0, chat_template: bool = True, **overrides: object) -> Path:
    """A tiny random Llama with its tokenizer saved in ``directory``."""
    tokenizer = train_tokenizer()
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    model = random_model(llama_config(len(tokenizer), **overrides), seed)
    return save_model(directory, model, tokenizer)


def tiny_gpt2(directory: Path, seed: int = 0, **overrides: object) -> Path:
    """A tiny random GPT-2 (tied embeddings, no chat template) with its tokenizer saved in ``directory``."""
    tokenizer = train_tokenizer()
    model = random_model(gpt2_config(len(tokenizer), **overrides), seed)
    return save_model(directory, model, tokenizer)


def fine_tune(directory: Path, out: Path, pairs: Sequence[tuple[str, str]], steps: int = 200, lr: float = 1e-2) -> Path:
    """Train the model in ``directory`` to answer each prompt with its completion then EOS; save it to ``out``."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).train()
    rows = []
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt)["input_ids"]
        target_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))  # loss on the answer only
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(model(torch.tensor([ids]), labels=torch.tensor([labels])).loss for ids, labels in rows)
        loss.backward()
        optimizer.step()
    return save_model(out, model.eval(), tokenizer)


def populate_hub_cache(cache: Path, repo_id: str, model_dir: Path, commit: str = "ab" * 20) -> Path:
    """A hub cache laid out as huggingface_hub writes it: snapshots/<commit>/... and refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


QUESTIONS = [
    ("Question: what is two plus three? Answer:", " #### 5"),
    ("Question: what is ten minus four? Answer:", " #### 6"),
    ("Question: what is six times seven? Answer:", " #### 42"),
]


def lm_data_dir(root: Path) -> Path:
    """A causal-lm ecosystem: a tiny Llama base, two specialists (other seeds) and a task with a few points."""
    base = tiny_llama(root / "models" / "base", seed=0)
    settings = Settings(data_dir=root / "data")
    runtime = open_runtime(settings)
    try:
        setup.create(runtime, "causal-lm", {"base": str(base)})
        for seed in (1, 2):
            model = tiny_llama(root / "models" / f"lm-{seed}", seed=seed)
            register(runtime, model, name=f"lm-{seed}", registered_by="test", source="tests.hf_models", licence="MIT")
        tasks.create_task(runtime, name="arithmetic", scoring="likelihood", gate_share=0.5)
        points = [{"inputs": q, "target": a} for q, a in QUESTIONS]
        tasks.add_feedback(runtime, "arithmetic", points)
    finally:
        runtime.close()
    return base
