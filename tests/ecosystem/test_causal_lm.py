"""The causal-lm family on tiny local Llama and GPT-2 models: config, space, build, scoring, generation, export."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hf_models import (
    CORPUS,
    fine_tune,
    gpt2_config,
    llama_config,
    metaspace_tokenizer,
    populate_hub_cache,
    save_model,
    tiny_gpt2,
    tiny_llama,
    train_tokenizer,
)
from huggingface_hub import constants as hub_constants
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecosystem import hub
from ecosystem.errors import RegistrationRefused
from ecosystem.families import FAMILIES, Family, get_family
from ecosystem.families.base import Delta, Sampling, TextGeneration
from ecosystem.families.causal_lm import SPACE_FILE, extract_answer, normalize_answer
from ecosystem.families.decoding import TextStream, generator_for, pick_tokens
from m2n2.checkpoint import SafetensorsSource, StateDictSource, read_header
from m2n2.errors import IncompatibleModels

QUESTIONS = [
    ("Question: what is two plus three? Answer:", " #### 5"),
    ("Question: what is ten minus four? Answer:", " #### 6"),
    ("Question: what is six times seven? Answer:", " #### 42"),
]
# Prompts of different lengths, so batches need padding.
PROMPTS = ["Hi", "The quick brown fox jumps over", "Question: what is two plus three? Answer:", "Once", "user: hello"]


@pytest.fixture(scope="module")
def family() -> Family:
    return get_family("causal-lm")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny base models, a fine-tune and sharded copies, written once for the module."""
    root = tmp_path_factory.mktemp("hf")
    tiny_llama(root / "llama")
    tiny_gpt2(root / "gpt2")
    fine_tune(root / "llama", root / "llama-tuned", QUESTIONS, steps=150)
    model = AutoModelForCausalLM.from_pretrained(root / "llama")
    save_model(root / "llama-sharded", model, AutoTokenizer.from_pretrained(root / "llama"), max_shard_size="40KB")
    return root


@pytest.fixture(scope="module")
def ecosystems(family: Family, models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One ecosystem config per base model (llama, gpt2), with a small batch size so scoring spans batches."""
    root = tmp_path_factory.mktemp("ecosystems")
    return {
        name: family.create_config({"base": str(models / name), "batch_size": 2, "max_new_tokens": 12}, root / name)
        for name in ("llama", "gpt2")
    }


def source(directory: Path) -> SafetensorsSource:
    return SafetensorsSource(directory / "model.safetensors")


def reference_logits(directory: Path, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return AutoModelForCausalLM.from_pretrained(directory).eval()(ids).logits  # (b, t, vocab)


def text_of(steps: Iterator[list[Delta | None]], n: int) -> tuple[list[str], list[Delta]]:
    """Each row's concatenated text and its last delta."""
    texts, last = [""] * n, [None] * n
    for step in steps:
        assert len(step) == n
        for i, delta in enumerate(step):
            if delta is not None:
                assert last[i] is None or last[i].finish_reason is None, "a row yielded after it finished"
                texts[i] += delta.text
                last[i] = delta
    return texts, last


# --- registry, config, space ----------------------------------------------------------------------------------


def test_registered_with_both_protocols(family: Family) -> None:
    assert FAMILIES["causal-lm"] is family
    assert isinstance(family, Family) and isinstance(family, TextGeneration)
    assert family.scoring_rules == ("exact_match", "likelihood") and family.api == "completions"


def test_create_config_copies_the_non_weight_files_and_fills_defaults(ecosystems: dict, models: Path) -> None:
    config = ecosystems["llama"]
    base_dir = Path(config["base_dir"])
    assert base_dir.is_absolute() and base_dir.name == "base"
    assert sorted(p.name for p in base_dir.iterdir()) == sorted(
        [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            SPACE_FILE,
        ]
    )
    assert config == {
        "base": str(models / "llama"),
        "base_dir": str(base_dir),
        "dtype": "float32",
        "answer_pattern": r"####\s*(.+)",
        "max_new_tokens": 12,
        "batch_size": 2,
    }


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_space_is_the_checkpoint_in_state_dict_order(family: Family, ecosystems: dict, models: Path, name: str) -> None:
    space = family.space(ecosystems[name])
    header, _ = read_header(models / name / "model.safetensors")
    with torch.device("meta"):
        order = list(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(models / name)).state_dict())
    assert space.names == [k for k in order if k in header]
    assert {(s.name, s.shape, s.dtype) for s in space} == {(s.name, s.shape, s.dtype) for s in header}
    # GPT-2's lm_head is tied to wte, so save_pretrained leaves it out; the Llama's is its own tensor.
    assert ("lm_head.weight" in space) == (name == "llama")
    assert family.space(ecosystems[name]) is space  # cached


def test_sharded_base_gives_the_same_space(family: Family, ecosystems: dict, models: Path, tmp_path: Path) -> None:
    config = family.create_config({"base": str(models / "llama-sharded")}, tmp_path)
    assert len(json.loads((models / "llama-sharded" / "model.safetensors.index.json").read_text())["weight_map"]) > 1
    assert family.space(config) == family.space(ecosystems["llama"])


def test_create_config_from_an_offline_hub_cache(
    family: Family, ecosystems: dict, models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = populate_hub_cache(tmp_path / "cache", "tiny-org/tiny-llama", models / "llama")
    # huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, at import: set what it read.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert hub.resolve("tiny-org/tiny-llama") == snapshot
    assert hub.resolve(f"tiny-org/tiny-llama@{'ab' * 20}") == snapshot
    config = family.create_config({"base": "tiny-org/tiny-llama"}, tmp_path / "eco")
    assert config["base"] == "tiny-org/tiny-llama"
    assert family.space(config) == family.space(ecosystems["llama"])
    assert not list(Path(config["base_dir"]).glob("*.safetensors"))
    with pytest.raises(hub.ModelNotAvailable, match=r"'tiny-org/absent' is not in the Hugging Face cache .*offline"):
        family.create_config({"base": "tiny-org/absent"}, tmp_path / "eco2")
    with pytest.raises(hub.ModelNotAvailable, match="neither an existing directory nor a hub id"):
        hub.resolve("no/such/dir")


def test_hub_resolve_reads_the_environment(models: Path, tmp_path: Path) -> None:
    snapshot = populate_hub_cache(tmp_path / "cache", "tiny-org/tiny-gpt2", models / "gpt2")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    code = "from ecosystem.hub import resolve; print(resolve('tiny-org/tiny-gpt2'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == snapshot


def test_create_config_refuses_custom_code_files_and_a_missing_tokenizer(
    family: Family, models: Path, tmp_path: Path
) -> None:
    custom = tmp_path / "custom"
    shutil.copytree(models / "gpt2", custom)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    with pytest.raises(RegistrationRefused, match=r"config.json: maps to custom code \(auto_map\)"):
        family.create_config({"base": str(custom)}, tmp_path / "eco")
    no_tokenizer = tmp_path / "no-tokenizer"
    save_model(no_tokenizer, AutoModelForCausalLM.from_pretrained(models / "gpt2"), None)
    with pytest.raises(ValueError, match=r"base: its tokenizer does not load"):
        family.create_config({"base": str(no_tokenizer)}, tmp_path / "eco")
    assert not (tmp_path / "eco" / "base").exists() and not list((tmp_path / "eco").glob(".base-*"))
    with pytest.raises(hub.ModelNotAvailable, match="a file; expected a model directory"):
        family.create_config({"base": str(custom / "config.json")}, tmp_path / "eco")


def test_create_config_refuses_bad_options_before_copying(family: Family, models: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config.batch_size: expected a positive integer"):
        family.create_config({"base": str(models / "llama"), "batch_size": 0}, tmp_path)
    with pytest.raises(ValueError, match=r"config.temperature: unknown field"):
        family.create_config({"base": str(models / "llama"), "temperature": 1}, tmp_path)
    with pytest.raises(ValueError, match="base: expected a model directory"):
        family.create_config({}, tmp_path)
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "float64"}, "config.dtype: expected one of float32, bfloat16, float16"),
        ({"answer_pattern": "(unclosed"}, "config.answer_pattern: not a regular expression"),
        ({"max_new_tokens": True}, "config.max_new_tokens: expected a positive integer"),
        ({"base_dir": "relative/base"}, "config.base_dir: expected an absolute directory path"),
        ({"base_dir": "/nonexistent"}, "config.base_dir: /nonexistent holds no param_space.json"),
        ({"layers": [1, 2]}, "config.layers: unknown field"),
    ],
)
def test_validate_config_names_the_bad_field(family: Family, ecosystems: dict, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        family.validate_config({**ecosystems["llama"], **change})


def test_validate_point(family: Family, ecosystems: dict) -> None:
    config = ecosystems["llama"]
    family.validate_point(config, "What is 2 + 3?", "5")
    with pytest.raises(ValueError, match="inputs: expected a non-empty prompt string"):
        family.validate_point(config, [1, 2], "5")
    with pytest.raises(ValueError, match="target: expected a non-empty answer string"):
        family.validate_point(config, "What is 2 + 3?", "")
    with pytest.raises(ValueError, match=r"inputs: prompt and target take \d+ tokens; the context is 256"):
        family.validate_point(config, "the lazy dog " * 100, "5")


# --- build ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_build_gives_from_pretrained_logits(family: Family, ecosystems: dict, models: Path, name: str) -> None:
    module = family.build(ecosystems[name], source(models / name))
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()])
    ids = torch.tensor([[5, 17, 42, 99, 7, 250], [1, 2, 3, 4, 5, 6]])  # (2, 6)
    with torch.inference_mode():
        logits = module(ids).logits  # (2, 6, vocab)
    assert torch.equal(logits, reference_logits(models / name, ids))
    if name == "gpt2":  # the tied head shares the embedding, as from_pretrained's does
        assert module.lm_head.weight is module.transformer.wte.weight


def test_build_in_bfloat16_and_from_a_state_dict(family: Family, ecosystems: dict, models: Path) -> None:
    config = {**ecosystems["llama"], "dtype": "bfloat16"}
    with safe_open(models / "llama" / "model.safetensors", "pt") as f:
        state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    module = family.build(config, StateDictSource(state_dict))
    assert module.model.embed_tokens.weight.dtype == torch.bfloat16
    assert module.model.rotary_emb.inv_freq.dtype == torch.float32  # as from_pretrained keeps it
    with torch.inference_mode():
        logits = module(torch.tensor([[5, 17, 42]])).logits  # (1, 3, vocab)
        reference = AutoModelForCausalLM.from_pretrained(models / "llama", dtype=torch.bfloat16)(
            torch.tensor([[5, 17, 42]])
        ).logits
    assert torch.equal(logits, reference)
    del state_dict["model.norm.weight"]
    with pytest.raises(IncompatibleModels, match=r"missing tensor 'model.norm.weight'"):
        family.build(config, StateDictSource(state_dict))


# --- scoring -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("rule", ["exact_match", "likelihood"])
def test_scores_are_per_point_in_unit_range_and_batching_does_not_change_them(
    family: Family, ecosystems: dict, models: Path, name: str, rule: str
) -> None:
    config, module = ecosystems[name], family.build(ecosystems[name], source(models / name))
    targets = ["there", "the lazy dog", "#### 5", "upon a time", "assistant: hi"]
    batched = family.score(module, config, PROMPTS, targets, rule)
    alone = torch.cat([family.score(module, config, [p], [t], rule) for p, t in zip(PROMPTS, targets, strict=True)])
    assert batched.shape == (5,) and batched.dtype == torch.float32
    assert bool(((batched >= 0) & (batched <= 1)).all())
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)
    if rule == "likelihood":
        assert bool((batched > 0).all()) and bool((batched < 0.5).all())  # a random model: low, never zero


def test_fine_tuned_model_answers_exactly_where_the_random_one_does_not(
    family: Family, ecosystems: dict, models: Path
) -> None:
    config = ecosystems["llama"]
    prompts, answers = [q for q, _ in QUESTIONS], ["5", "6.0", "#### 42"]  # targets normalised like answers
    tuned = family.build(config, source(models / "llama-tuned"))
    base = family.build(config, source(models / "llama"))
    assert family.score(tuned, config, prompts, answers, "exact_match").tolist() == [1.0, 1.0, 1.0]
    assert family.score(base, config, prompts, answers, "exact_match").tolist() == [0.0, 0.0, 0.0]
    assert family.score(tuned, config, prompts, ["7", "6", "41"], "exact_match").tolist() == [0.0, 1.0, 0.0]
    targets = [a for _, a in QUESTIONS]
    tuned_likelihood = family.score(tuned, config, prompts, targets, "likelihood")
    assert bool((tuned_likelihood > 0.9).all())
    assert bool((family.score(base, config, prompts, targets, "likelihood") < 0.1).all())
    assert family.predict(tuned, config, prompts) == [{"text": a} for _, a in QUESTIONS]


def test_score_refuses_unknown_rules_and_mismatched_targets(family: Family, ecosystems: dict, models: Path) -> None:
    config = ecosystems["gpt2"]
    module = family.build(config, source(models / "gpt2"))
    with pytest.raises(ValueError, match="rule: unknown scoring rule 'accuracy'; available: exact_match, likelihood"):
        family.score(module, config, ["a"], ["b"], "accuracy")
    with pytest.raises(ValueError, match="targets: expected 2 answers"):
        family.score(module, config, ["a", "b"], ["b"], "likelihood")
    with pytest.raises(ValueError, match=r"targets\[0\]: expected a non-empty string"):
        family.score(module, config, ["a"], [5], "likelihood")


@pytest.mark.parametrize(
    ("completion", "target"),
    [
        (" The answer is #### 1,000.\nQuestion: next", "1000"),
        ("#### 5.0", "5"),
        ("####   Paris ", "  paris."),
        ("the  Blue\twhale!", "The blue whale"),
        ("#### -0.50", "#### -.5"),
    ],
)
def test_answers_are_extracted_and_normalised_alike(completion: str, target: str) -> None:
    pattern = r"####\s*(.+)"
    assert normalize_answer(extract_answer(completion, pattern)) == normalize_answer(extract_answer(target, pattern))


def test_different_answers_stay_different() -> None:
    assert normalize_answer("1,000") != normalize_answer("100")
    assert normalize_answer("5.01") != normalize_answer("5")
    assert extract_answer("no marker here", r"####\s*(.+)") == "no marker here"
    assert extract_answer("x = 7", r"\d+") == "7"  # a pattern without groups gives its whole match


# --- generation ----------------------------------------------------------------------------------------------


def test_greedy_generation_is_deterministic_and_matches_predict(family: Family, ecosystems: dict, models: Path) -> None:
    config, module = ecosystems["llama"], family.build(ecosystems["llama"], source(models / "llama"))
    greedy = [Sampling(max_tokens=12, temperature=0)] * len(PROMPTS)
    first, last = text_of(family.generate(module, config, PROMPTS, greedy), len(PROMPTS))
    second, _ = text_of(family.generate(module, config, PROMPTS, greedy), len(PROMPTS))
    assert first == second == [p["text"] for p in family.predict(module, config, PROMPTS)]
    assert all(d.completion_tokens <= 12 and d.finish_reason in ("stop", "length") for d in last)


class WithoutCache(torch.nn.Module):
    """A causal LM taking only ids and mask, keeping no KV cache: the decoder must feed whole sequences."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CausalLMOutputWithPast:
        # No position_ids either (as ALiBi models): positions follow from the mask.
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (b, t)
        out = self.model(input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
        return CausalLMOutputWithPast(logits=out.logits)  # (b, t, vocab): every position's


def test_decoding_without_a_cache_gives_the_same_text(family: Family, ecosystems: dict, models: Path) -> None:
    config, module = ecosystems["llama"], family.build(ecosystems["llama"], source(models / "llama"))
    greedy = [Sampling(max_tokens=12, temperature=0), Sampling(max_tokens=5, temperature=0)]
    cached, _ = text_of(family.generate(module, config, PROMPTS[:2], greedy), 2)
    assert text_of(family.generate(WithoutCache(module), config, PROMPTS[:2], greedy), 2)[0] == cached
    targets = ["there", "the lazy dog"]
    torch.testing.assert_close(
        family.score(WithoutCache(module), config, PROMPTS[:2], targets, "likelihood"),
        family.score(module, config, PROMPTS[:2], targets, "likelihood"),
    )


def test_sampling_draws_from_the_top_p_nucleus_in_proportion() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(3, 1)  # (3, 4): the same distribution thrice
    rows = [Sampling(temperature=1.0, top_p=0.8, seed=1), Sampling(temperature=0), Sampling(temperature=1.0)]
    generators = [generator_for(s, seed) for s, seed in zip(rows, [1, 2, 3], strict=True)]
    draws = torch.stack([pick_tokens(logits, rows, generators) for _ in range(4000)])  # (4000, 3)
    nucleus = draws[:, 0].bincount(minlength=4) / 4000  # tokens 0 and 1 hold 0.8 of the mass: 5/8 and 3/8
    assert nucleus[2:].sum() == 0 and abs(nucleus[0] - 5 / 8) < 0.03
    assert bool((draws[:, 1] == 0).all())  # greedy
    full = draws[:, 2].bincount(minlength=4) / 4000
    torch.testing.assert_close(full, torch.tensor([0.5, 0.3, 0.15, 0.05]), rtol=0, atol=0.03)
    again = [generator_for(rows[0], 1)]
    assert [int(pick_tokens(logits[:1], rows[:1], again)) for _ in range(50)] == draws[:50, 0].tolist()


def test_a_seed_reproduces_its_text_whatever_it_is_batched_with(family: Family, ecosystems: dict, models: Path) -> None:
    config, module = ecosystems["gpt2"], family.build(ecosystems["gpt2"], source(models / "gpt2"))
    seeded = Sampling(max_tokens=16, temperature=1.0, top_p=0.95, seed=1234)
    alone, _ = text_of(family.generate(module, config, ["Once"], [seeded]), 1)
    others = [Sampling(max_tokens=4, temperature=0.7), Sampling(max_tokens=20, temperature=0)]
    batched, _ = text_of(
        family.generate(module, config, [PROMPTS[1], "Once", PROMPTS[2]], [others[0], seeded, others[1]]), 3
    )
    assert batched[1] == alone[0] != ""
    other_seed, _ = text_of(family.generate(module, config, ["Once"], [Sampling(16, 1.0, 0.95, seed=99)]), 1)
    assert other_seed != alone


def test_stop_strings_max_tokens_and_eos_set_the_finish_reason(family: Family, ecosystems: dict, models: Path) -> None:
    config, module = ecosystems["gpt2"], family.build(ecosystems["gpt2"], source(models / "gpt2"))
    prompt = PROMPTS[1]
    (full,), (end,) = text_of(family.generate(module, config, [prompt], [Sampling(max_tokens=12, temperature=0)]), 1)
    assert end == Delta(end.text, "length", 12)
    stop = next(full[i : i + 2] for i in range(2, len(full) - 2) if full[i : i + 2].isprintable() and full[i] != " ")
    (cut,), (end,) = text_of(family.generate(module, config, [prompt], [Sampling(12, 0, stop=("zzz", stop))]), 1)
    assert cut == full[: full.index(stop)] and end.finish_reason == "stop" and stop not in cut
    (short,), (end,) = text_of(family.generate(module, config, [prompt], [Sampling(max_tokens=3, temperature=0)]), 1)
    assert full.startswith(short) and (end.finish_reason, end.completion_tokens) == ("length", 3)

    tuned = family.build(ecosystems["llama"], source(models / "llama-tuned"))
    (answer,), (end,) = text_of(
        family.generate(tuned, ecosystems["llama"], [QUESTIONS[0][0]], [Sampling(max_tokens=30, temperature=0)]), 1
    )
    assert answer == QUESTIONS[0][1] and end.finish_reason == "stop" and 1 < end.completion_tokens < 30  # EOS


def test_empty_batches_and_an_empty_prompt(family: Family, ecosystems: dict, models: Path) -> None:
    config, module = ecosystems["gpt2"], family.build(ecosystems["gpt2"], source(models / "gpt2"))
    assert list(family.generate(module, config, [], [])) == []
    assert family.score(module, config, [], [], "exact_match").shape == (0,)
    assert family.score(module, config, [], [], "likelihood").shape == (0,)
    assert family.count_tokens(config, "") == 1  # an empty prompt starts from BOS, as transformers' generate does
    _, (end,) = text_of(family.generate(module, config, [""], [Sampling(max_tokens=4, temperature=0)]), 1)
    assert end.completion_tokens <= 4 and end.finish_reason in ("stop", "length")


def test_generate_checks_its_arguments_before_decoding(family: Family, ecosystems: dict, models: Path) -> None:
    config, module = ecosystems["gpt2"], family.build(ecosystems["gpt2"], source(models / "gpt2"))
    with pytest.raises(ValueError, match=r"sampling\[1\].temperature: expected a number >= 0"):
        family.generate(module, config, ["a", "b"], [Sampling(), Sampling(temperature=-1)])
    with pytest.raises(ValueError, match=r"sampling\[0\].top_p: expected a number in \(0, 1\]"):
        family.generate(module, config, ["a"], [Sampling(top_p=0)])
    with pytest.raises(ValueError, match=r"prompts\[0\]: \d+ tokens leave no room in the 256-token context"):
        family.generate(module, config, ["the lazy dog " * 100], [Sampling()])
    with pytest.raises(ValueError, match="sampling: expected 2 Sampling objects"):
        family.generate(module, config, ["a", "b"], [Sampling()])


def test_text_streams_never_split_a_character_or_show_a_stop_string(ecosystems: dict) -> None:
    tokenizer = AutoTokenizer.from_pretrained(ecosystems["gpt2"]["base_dir"])
    text = "日本語のテキスト。Größe"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) > len(text) / 2  # some characters take several byte tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(i)[0] for i in ids]
    assert "".join(pieces) + stream.flush() == text and not any("\ufffd" in p for p in pieces)

    stream, released = TextStream(tokenizer, stop=("テキスト",)), ""
    for i in ids:
        piece, stopped = stream.push(i)
        released += piece
        assert not released.endswith(("テ", "テキ")) or stopped  # a possible stop start is held back
        if stopped:
            break
    assert stopped and released == "日本語の"


def test_a_completion_keeps_the_space_before_its_first_word() -> None:
    tokenizer = metaspace_tokenizer()
    prompt, whole = tokenizer("Once upon a")["input_ids"], tokenizer("Once upon a time")["input_ids"]
    assert whole[: len(prompt)] == prompt and tokenizer.decode(whole[len(prompt) :]) == "time"  # the space is lost
    stream = TextStream(tokenizer, context=prompt)
    assert "".join(stream.push(i)[0] for i in whole[len(prompt) :]) + stream.flush() == " time"


def test_chat_prompt_context_length_and_token_counts(family: Family, ecosystems: dict) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert family.chat_prompt(ecosystems["llama"], messages) == "<|system|>Be brief.\n<|user|>hi\n<|assistant|>"
    assert family.chat_prompt(ecosystems["gpt2"], messages) == "system: Be brief.\nuser: hi\nassistant:"
    with pytest.raises(ValueError, match=r"messages\[0\]: expected an object with string 'role' and 'content'"):
        family.chat_prompt(ecosystems["gpt2"], [{"role": "user"}])
    assert family.context_length(ecosystems["llama"]) == 256 == family.context_length(ecosystems["gpt2"])
    tokenizer = AutoTokenizer.from_pretrained(ecosystems["llama"]["base_dir"])
    assert family.count_tokens(ecosystems["llama"], CORPUS[0]) == len(tokenizer(CORPUS[0])["input_ids"])


# --- export --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_export_round_trips_through_from_pretrained(
    family: Family, ecosystems: dict, models: Path, tmp_path: Path, name: str
) -> None:
    config = ecosystems[name]
    module = family.build(config, source(models / name))
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])  # (1, 8)
    with torch.inference_mode():
        expected = module(ids).logits  # (1, 8, vocab)

    written = family.export(config, source(models / name), tmp_path / "single")
    assert {p.name for p in written} >= {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"}
    assert SPACE_FILE not in {p.name for p in written}
    assert read_header(tmp_path / "single" / "model.safetensors")[1] == {"format": "pt"}
    assert torch.equal(reference_logits(tmp_path / "single", ids), expected)
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "single").get_vocab()
        == AutoTokenizer.from_pretrained(models / name).get_vocab()
    )

    sharded = family.export(config, source(models / name), tmp_path / "sharded", max_shard_bytes=30_000)
    shards = sorted(p.name for p in sharded if p.name.startswith("model-"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(family.space(config).names)
    assert torch.equal(reference_logits(tmp_path / "sharded", ids), expected)
    assert family.weight_files(config, tmp_path / "sharded") == [tmp_path / "sharded" / s for s in shards]

    family.export(config, source(models / name), tmp_path / "sharded")  # again, small enough for one file
    assert sorted(p.name for p in (tmp_path / "sharded").glob("model*")) == ["model.safetensors"]


# --- weight_files --------------------------------------------------------------------------------------------


def test_weight_files_of_matching_directories(family: Family, ecosystems: dict, models: Path, tmp_path: Path) -> None:
    config = ecosystems["llama"]
    assert family.weight_files(config, models / "llama-tuned") == [models / "llama-tuned" / "model.safetensors"]
    files = family.weight_files(config, models / "llama-sharded")
    assert len(files) > 1 and all(f.name.startswith("model-000") for f in files)
    bare = tmp_path / "no-tokenizer"  # a fine-tune saved without its tokenizer uses the base's
    save_model(bare, AutoModelForCausalLM.from_pretrained(models / "llama"), None)
    assert family.weight_files(config, bare) == [bare / "model.safetensors"]
    fields = json.loads((bare / "config.json").read_text())
    bookkeeping = {"transformers_version": "5.0.0", "dtype": "bfloat16", "_name_or_path": "me/x", "use_cache": False}
    unused_at_inference = {"attention_dropout": 0.1, "initializer_range": 0.02, "eos_token_id": [0, 1]}
    (bare / "config.json").write_text(json.dumps({**fields, **bookkeeping, **unused_at_inference}))
    assert family.weight_files(config, bare) == [bare / "model.safetensors"]


def config_only(directory: Path, config) -> Path:
    config.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d, v: config_only(d, llama_config(v, num_hidden_layers=3)),
            "config.json: num_hidden_layers is 3, the base's is 2",
        ),
        (
            lambda d, v: config_only(d, llama_config(v, hidden_size=64)),
            "config.json: hidden_size is 64, the base's is 32",
        ),
        (lambda d, v: config_only(d, llama_config(v + 8)), "config.json: vocab_size is 328, the base's is 320"),
        (lambda d, v: config_only(d, gpt2_config(v)), "config.json: model_type is 'gpt2', the base's is 'llama'"),
        (
            lambda d, v: config_only(d, llama_config(v, rope_parameters={"rope_theta": 5e5, "rope_type": "default"})),
            "config.json: rope_parameters.rope_theta is 500000.0, the base's is 10000.0",
        ),
        (lambda d, v: d, "no config.json"),
    ],
)
def test_weight_files_refuses_a_different_architecture(
    family: Family, ecosystems: dict, tmp_path: Path, make, message: str
) -> None:
    directory = tmp_path / "candidate"
    directory.mkdir(exist_ok=True)
    make(directory, 320)
    with pytest.raises(RegistrationRefused, match=message):
        family.weight_files(ecosystems["llama"], directory)


def test_weight_files_refuses_a_different_tokenizer(
    family: Family, ecosystems: dict, models: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "retokenized"
    shutil.copytree(models / "llama", directory)
    other = train_tokenizer(corpus=[*CORPUS[:3], "completely different text changes the merges"])
    assert len(other) == 320  # the same size: only the vocabulary itself differs
    other.save_pretrained(directory)
    with pytest.raises(RegistrationRefused, match=r"tokenizer differs from the base's: token .* has id"):
        family.weight_files(ecosystems["llama"], directory)


def test_weight_files_refuses_pickles_naming_the_file(
    family: Family, ecosystems: dict, models: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "pickled"
    shutil.copytree(models / "llama", directory)
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"not loaded, so its content does not matter")
    with pytest.raises(
        RegistrationRefused,
        match=r"pytorch_model.bin: pickle-based weights are never loaded; convert them with "
        r"model.save_pretrained\(dir, safe_serialization=True\) or safetensors.torch.save_file",
    ):
        family.weight_files(ecosystems["llama"], directory)
    (directory / "pytorch_model.bin").unlink()
    with pytest.raises(RegistrationRefused, match=r"no model.safetensors or model.safetensors.index.json"):
        family.weight_files(ecosystems["llama"], directory)


# --- GPU -----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_build_and_generate_on_cuda(family: Family, ecosystems: dict, models: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    config = ecosystems["llama"]
    cpu = family.build(config, source(models / "llama-tuned"))
    gpu = family.build(config, source(models / "llama-tuned"), device="cuda")
    assert all(p.device.type == "cuda" for p in [*gpu.parameters(), *gpu.buffers()])
    ids = torch.tensor([[3, 1, 4, 1, 5, 9]])
    with torch.inference_mode():
        torch.testing.assert_close(gpu(ids.cuda()).logits.cpu(), cpu(ids).logits, rtol=1e-4, atol=1e-4)
    prompts = [q for q, _ in QUESTIONS]
    assert family.score(gpu, config, prompts, ["5", "6", "42"], "exact_match").tolist() == [1.0, 1.0, 1.0]
    seeded = [Sampling(max_tokens=8, temperature=1.0, seed=5)] * 3
    assert text_of(family.generate(gpu, config, prompts, seeded), 3) == text_of(
        family.generate(gpu, config, prompts, seeded), 3
    )
