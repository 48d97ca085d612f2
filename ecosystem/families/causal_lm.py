"""The ``causal-lm`` family: any transformers ``AutoModelForCausalLM``, merged tensor by tensor.

An ecosystem's config (``create_config`` writes it; ``validate_config`` fills the defaults):

- ``base``: the reference the ecosystem was created from (a directory or ``org/name@revision``), kept
  for the record.
- ``base_dir``: absolute path of the copy of the base's non-weight files (``config.json``,
  ``generation_config.json``, tokenizer files, chat template) plus ``param_space.json``, the names, shapes
  and dtypes of the base checkpoint's tensors in the model's state-dict order: the space that is merged.
- ``dtype`` (default ``"float32"``): the compute dtype of built models; float32 runs on any CPU,
  ``"bfloat16"`` halves GPU memory.
- ``answer_pattern`` (default ``"####\\s*(.+)"``, GSM8K's convention): exact-match scoring takes the
  answer from a completion with this regex (its first group if it has one, else the whole match), or the
  whole completion when it does not match.
- ``max_new_tokens`` (default 32): the most tokens ``predict`` and exact-match scoring generate.
- ``batch_size`` (default 16): prompts per forward pass in ``score`` and ``predict``.

The space is what the checkpoint holds: a tied ``lm_head.weight`` that ``save_pretrained`` leaves out
(GPT-2) is not in it, and ``build`` ties it again.
"""

import functools
import json
import logging
import math
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from ecosystem import hub
from ecosystem.errors import RegistrationRefused
from ecosystem.families import hf_files
from ecosystem.families.base import Delta, Sampling
from ecosystem.families.decoding import Decoder, TextStream, generator_for, left_pad, pick_tokens, run_model
from ecosystem.families.registry import register_family
from m2n2.checkpoint import DTYPE_NAMES, DTYPES, TensorSource, iter_tensors
from m2n2.errors import IncompatibleModels
from m2n2.space import ParamSpace

logger = logging.getLogger(__name__)

SCORING_RULES = ("exact_match", "likelihood")
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "answer_pattern": r"####\s*(.+)",
    "max_new_tokens": 32,
    "batch_size": 16,
}
SPACE_FILE = "param_space.json"
# Fields a model config may give its context length under, in order of preference.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
DEFAULT_CONTEXT_LENGTH = 2048  # for architectures without positions (recurrent models): a conservative limit
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # what save_pretrained's max_shard_size="5GB" gives
SMOKE_PROMPT = "Hello"
TRAILING_PUNCTUATION = (
    ".,;:!?\u3002\u3001\uff01\uff1f"  # ASCII, then ideographic full stop and comma, fullwidth ! and ?
)
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+|(?=\.\d))(?:\.\d+)?")
Prompt = Annotated[str, Field(min_length=1, description="a prompt the model continues")]


class Completion(BaseModel):
    """The causal LM's answer for one prompt."""

    text: str = Field(description="the greedy completion (at most max_new_tokens, without the EOS token)")


@register_family
class CausalLM:
    """A transformers causal LM: prompts in, completions out; scored by exact match or target likelihood."""

    name = "causal-lm"
    scoring_rules: tuple[str, ...] = SCORING_RULES
    api = "completions"
    predict_input = Prompt
    predict_output = Completion

    def create_config(self, options: Mapping[str, Any], root: Path) -> dict[str, Any]:
        """Copy the base's non-weight files to ``root/base``, record its parameter space, return the config."""
        options = dict(options)
        base = options.pop("base", None)
        if not isinstance(base, str) or not base:
            raise ValueError(f"base: expected a model directory or hub id like 'org/name', got {base!r}")
        _check_settings({**DEFAULTS, **options}, allowed=set(DEFAULTS))  # refuse bad options before copying
        source = hub.resolve(base)
        hf_files.check_no_custom_code(source)
        space = hf_files.checkpoint_space(source, hf_files.safetensors_files(source))
        target = Path(root) / "base"
        if target.exists():
            raise ValueError(f"base: {target} already exists; create the ecosystem in a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".base-"))
        try:
            hf_files.copy_model_files(source, staging)
            _check_tokenizer_loads(staging)
            _write_space(staging / SPACE_FILE, space)
            staging.rename(target)  # the copy appears whole or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("causal-lm base %s: %d tensors, %d parameters", base, len(space), space.dim)
        return self.validate_config({"base": base, "base_dir": str(target.resolve()), **options})

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config with defaults filled in; ``ValueError`` naming an unknown or malformed field."""
        if not isinstance(config, Mapping):
            raise ValueError(f"config: expected an object with 'base_dir', got {config!r}")
        out = _check_settings({**DEFAULTS, **config}, allowed={"base", "base_dir", *DEFAULTS})
        base_dir = out.get("base_dir")
        if not isinstance(base_dir, str) or not Path(base_dir).is_absolute():
            raise ValueError(f"config.base_dir: expected an absolute directory path, got {base_dir!r}")
        if not (Path(base_dir) / SPACE_FILE).is_file():
            raise ValueError(f"config.base_dir: {base_dir} holds no {SPACE_FILE}; create it with create_config")
        out.setdefault("base", base_dir)
        return out

    def validate_point(self, config: Mapping[str, Any], inputs: Any, target: Any) -> None:
        """``inputs`` a non-empty prompt, ``target`` a non-empty answer; together they fit in the context."""
        cfg = self.validate_config(config)
        if not isinstance(inputs, str) or not inputs.strip():
            raise ValueError(f"inputs: expected a non-empty prompt string, got {inputs!r}")
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"target: expected a non-empty answer string, got {target!r}")
        prompt_ids = _encode(cfg["base_dir"], [inputs])[0]
        n, context = (
            len(prompt_ids) + len(_target_ids(cfg["base_dir"], inputs, prompt_ids, target)),
            self.context_length(cfg),
        )
        if n > context:
            raise ValueError(f"inputs: prompt and target take {n} tokens; the context is {context}")

    def space(self, config: Mapping[str, Any]) -> ParamSpace:
        """The base checkpoint's tensors in state-dict order (read once per base directory)."""
        return _space_at(self.validate_config(config)["base_dir"])

    def weight_files(self, config: Mapping[str, Any], directory: Path) -> list[Path]:
        """The safetensors files of a checkpoint directory whose config and tokenizer match the base's."""
        base_dir = Path(self.validate_config(config)["base_dir"])
        directory = Path(directory)
        if not directory.is_dir():
            raise RegistrationRefused(f"{directory}: not a directory")
        hf_files.check_config(base_dir, directory)
        hf_files.check_tokenizer(base_dir, directory, _tokenizer_at)
        return hf_files.safetensors_files(directory)

    def build(self, config: Mapping[str, Any], source: TensorSource, device: str = "cpu") -> nn.Module:
        """The model on ``device`` in the compute dtype; built on the meta device, then given the source's tensors."""
        cfg = self.validate_config(config)
        space = self.space(cfg)
        space.check_compatible(source.space, "model")
        dtype = COMPUTE_DTYPES[cfg["dtype"]]
        model = hf_files.empty_model(cfg["base_dir"])
        # One tensor read and converted at a time: the peak is the model plus one tensor.
        tensors = {name: hf_files.to_compute(tensor, device, dtype) for name, tensor in iter_tensors(source, space)}
        _, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
        if unexpected:  # missing ones are tied; materialise_buffers names any left on meta
            raise IncompatibleModels(f"model has unexpected tensor {unexpected[0]!r}")
        model.tie_weights()  # e.g. GPT-2's lm_head.weight, absent from the checkpoint, becomes wte.weight
        hf_files.materialise_buffers(model, device)
        return model.requires_grad_(False).eval()

    def smoke_inputs(self, config: Mapping[str, Any]) -> list:
        """One short prompt."""
        return [SMOKE_PROMPT]

    def predict(self, module: nn.Module, config: Mapping[str, Any], inputs: list) -> list[dict[str, Any]]:
        """``[{"text": completion}]``: greedy, at most ``max_new_tokens``, stopping at EOS."""
        cfg = self.validate_config(config)
        _check_strings(inputs, "inputs")
        return [{"text": text} for text in self._complete(module, cfg, inputs)]

    def score(
        self, module: nn.Module, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> torch.Tensor:
        """Scores (n,) in [0, 1]: ``exact_match`` of the greedy answer, or ``likelihood`` of the target tokens."""
        cfg = self.validate_config(config)
        if rule not in SCORING_RULES:
            raise ValueError(f"rule: unknown scoring rule {rule!r}; available: {', '.join(SCORING_RULES)}")
        _check_strings(inputs, "inputs")
        _check_strings(targets, "targets")
        if len(targets) != len(inputs):
            raise ValueError(f"targets: expected {len(inputs)} answers (one per input), got {len(targets)}")
        if rule == "likelihood":
            return self._likelihood(module, cfg, inputs, targets)
        pattern = cfg["answer_pattern"]
        answers = [normalize_answer(extract_answer(text, pattern)) for text in self._complete(module, cfg, inputs)]
        expected = [normalize_answer(extract_answer(t, pattern)) for t in targets]
        return torch.tensor([float(a == e) for a, e in zip(answers, expected, strict=True)])  # (n,)

    def export(
        self,
        config: Mapping[str, Any],
        source: TensorSource,
        directory: Path,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    ) -> list[Path]:
        """``save_pretrained``'s layout: the base's config and tokenizer files plus safetensors (sharded if large)."""
        cfg = self.validate_config(config)
        space = self.space(cfg)
        space.check_compatible(source.space, "model")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = hf_files.copy_model_files(Path(cfg["base_dir"]), directory, skip={SPACE_FILE})
        written += hf_files.write_weights(directory, space, source, max_shard_bytes)
        return written

    # --- TextGeneration -------------------------------------------------------------------------------

    def context_length(self, config: Mapping[str, Any]) -> int:
        """The model's position limit (``max_position_embeddings``, ``n_positions``, ...)."""
        hf_config = _hf_config_at(self.validate_config(config)["base_dir"])
        text_config = hf_config.get_text_config()
        for field in CONTEXT_FIELDS:
            value = getattr(text_config, field, None)
            if hf_files.is_int(value) and value > 0:
                return value
        return DEFAULT_CONTEXT_LENGTH

    def count_tokens(self, config: Mapping[str, Any], text: str) -> int:
        """Tokens of ``text`` read as a prompt (a BOS the tokenizer adds included)."""
        return len(_encode(self.validate_config(config)["base_dir"], [text])[0])

    def chat_prompt(self, config: Mapping[str, Any], messages: list[dict[str, str]]) -> str:
        """The tokenizer's chat template (with the generation prompt), else ``role: content`` lines, ``assistant:``."""
        tokenizer = _tokenizer_at(self.validate_config(config)["base_dir"])
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages: expected a non-empty list of {'role': ..., 'content': ...} objects")
        for i, m in enumerate(messages):
            if (
                not isinstance(m, Mapping)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise ValueError(f"messages[{i}]: expected an object with string 'role' and 'content', got {m!r}")
        if not tokenizer.chat_template:
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # the template itself raises (e.g. "roles must alternate")
            raise ValueError(f"messages: the model's chat template refused them: {e}") from None

    def generate(
        self, module: nn.Module, config: Mapping[str, Any], prompts: list[str], sampling: list[Sampling]
    ) -> Iterator[list[Delta | None]]:
        """Decode every prompt in one batch; per step, a ``Delta`` per unfinished prompt and None for finished ones.

        Each step samples one token per unfinished row: greedy at temperature 0, else from the top-p nucleus
        of softmax(logits / temperature) with the row's own generator, seeded by ``Sampling.seed`` (a fresh
        random seed when None). A row finishes with "stop" at an EOS token (not counted in the text, counted in
        ``completion_tokens``) or when its text contains a stop string (the text ends before it, and no part
        of it is ever streamed), else with "length" after ``max_tokens`` tokens or at the context's end.
        ``Delta.text`` is the text new since the row's previous delta (possibly empty while a multi-byte
        character or a possible stop string is incomplete); the pieces of a row join into its completion.
        Arguments are checked now (``ValueError`` naming the field); decoding happens as the iterator is read.
        """
        cfg = self.validate_config(config)
        _check_strings(prompts, "prompts", allow_empty=True)
        if not isinstance(sampling, list | tuple) or len(sampling) != len(prompts):
            raise ValueError(f"sampling: expected {len(prompts)} Sampling objects (one per prompt)")
        for i, s in enumerate(sampling):
            _check_sampling(s, f"sampling[{i}]")
        rows = _encode(cfg["base_dir"], prompts)
        context = self.context_length(cfg)
        for i, row in enumerate(rows):
            if len(row) >= context:
                raise ValueError(f"prompts[{i}]: {len(row)} tokens leave no room in the {context}-token context")
        return _decode_stream(module, cfg["base_dir"], rows, list(sampling), context)

    # --- helpers that need the family's config --------------------------------------------------------

    def _complete(self, module: nn.Module, cfg: dict[str, Any], prompts: list[str]) -> list[str]:
        """Greedy completions of ``max_new_tokens`` at most, batched by similar length."""
        rows = _encode(cfg["base_dir"], prompts)
        context = self.context_length(cfg)
        rows = [row[-(context - 1) :] for row in rows]  # keep the prompt's end when it fills the context
        greedy = Sampling(max_tokens=cfg["max_new_tokens"], temperature=0.0)
        texts = [""] * len(rows)
        for batch in _batches(rows, cfg["batch_size"]):
            for step in _decode_stream(
                module, cfg["base_dir"], [rows[i] for i in batch], [greedy] * len(batch), context
            ):
                for i, delta in zip(batch, step, strict=True):
                    if delta is not None:
                        texts[i] += delta.text
        return texts

    def _likelihood(self, module: nn.Module, cfg: dict[str, Any], inputs: list, targets: list) -> torch.Tensor:
        """exp(mean log p(target token | prompt, earlier target tokens)) per point, (n,)."""
        base_dir, context = cfg["base_dir"], self.context_length(cfg)
        prompts = _encode(base_dir, inputs)
        answers = [_target_ids(base_dir, x, p, t) for x, p, t in zip(inputs, prompts, targets, strict=True)]
        rows = []
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            if len(a) >= context:
                raise ValueError(f"targets[{i}]: {len(a)} tokens leave no room for the prompt in the {context} context")
            rows.append(p[-(context - len(a)) :] + a)  # drop the prompt's start if both do not fit
        scores = torch.empty(len(rows))  # (n,)
        pad_id = _pad_id(base_dir)
        for batch in _batches(rows, cfg["batch_size"]):
            lengths = torch.tensor([len(answers[i]) for i in batch])  # (b,)
            scores[batch] = _target_likelihood(module, [rows[i] for i in batch], lengths, pad_id)
        return scores


def _decode_stream(
    module: nn.Module, base_dir: str, rows: list[list[int]], samplings: list[Sampling], context: int
) -> Iterator[list[Delta | None]]:
    """Decode rows together until each stops (EOS, a stop string, its ``max_tokens`` or the context)."""
    if not rows:
        return
    tokenizer, eos = _tokenizer_at(base_dir), _eos_ids_at(base_dir)
    seeds = [s.seed if s.seed is not None else secrets.randbits(63) for s in samplings]
    generators = [generator_for(s, seed) for s, seed in zip(samplings, seeds, strict=True)]
    budgets = [min(s.max_tokens, context - len(r)) for s, r in zip(samplings, rows, strict=True)]
    streams = [TextStream(tokenizer, s.stop, context=r) for s, r in zip(samplings, rows, strict=True)]
    counts, done = [0] * len(rows), [False] * len(rows)
    decoder = Decoder(module, rows, _pad_id(base_dir))
    while True:
        live = decoder.rows.tolist()
        tokens = pick_tokens(decoder.logits(), [samplings[i] for i in live], [generators[i] for i in live])  # (b,)
        step: list[Delta | None] = [None] * len(rows)
        for i, token in zip(live, tokens.tolist(), strict=True):
            if done[i]:  # a cache that cannot drop rows keeps finished ones in the batch
                continue
            counts[i] += 1
            text, reason = _next_piece(streams[i], token, eos, counts[i] >= budgets[i])
            step[i] = Delta(text, reason, counts[i])
            done[i] = reason is not None
        yield step
        if all(done):
            return
        decoder.advance(tokens)
        decoder.keep(torch.tensor([not done[i] for i in live]))


def _next_piece(stream: TextStream, token: int, eos: frozenset[int], last: bool) -> tuple[str, str | None]:
    """The text a token releases and the finish reason it causes ("stop" at EOS or a stop string, "length")."""
    if token in eos:
        return stream.flush(), "stop"
    text, stopped = stream.push(token)
    if stopped:
        return text, "stop"
    if last:
        return text + stream.flush(), "length"
    return text, None


def _target_likelihood(module: nn.Module, rows: list[list[int]], lengths: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Geometric-mean probability of each row's last ``lengths[i]`` tokens given the tokens before them, (b,)."""
    device = next(module.parameters()).device
    ids, mask, positions = left_pad(rows, pad_id, device)  # (b, t) each
    k = int(lengths.max())
    # Only the last k + 1 positions' logits are needed: left padding puts every target at the end.
    out = run_model(module, input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=k + 1)
    logits = out.logits[:, -(k + 1) : -1].float()  # (b, k, vocab): predictions of the last k tokens
    # log p(token) = its logit - logsumexp(logits): no second (b, k, vocab) tensor, unlike log_softmax
    picked = logits.gather(-1, ids[:, -k:, None]).squeeze(-1)  # (b, k)
    token_log_probs = (picked - logits.logsumexp(dim=-1)).cpu()  # (b, k)
    in_target = torch.arange(k) >= k - lengths[:, None]  # (b, k)
    mean = torch.where(in_target, token_log_probs, 0.0).sum(dim=1) / lengths  # (b,)
    return mean.exp().clamp(0.0, 1.0)  # (b,)


# --- answers ---------------------------------------------------------------------------------------------


def extract_answer(text: str, pattern: str) -> str:
    """The answer in ``text``: the pattern's first group (or whole match), or all of ``text`` if it does not match."""
    match = re.search(pattern, text)
    if match is None:
        return text
    return match.group(1) if match.re.groups else match.group(0)


def normalize_answer(text: str) -> str:
    """Whitespace collapsed, case folded, trailing punctuation dropped; numbers canonical (1,000 = 1000, 5.0 = 5)."""
    text = " ".join(text.split()).casefold().rstrip(TRAILING_PUNCTUATION + " ")
    if NUMBER.fullmatch(text):
        value = Decimal(text.replace(",", ""))
        return "0" if value == 0 else format(value.normalize(), "f")
    return text


# --- tokenizer, config and space, cached per base directory ------------------------------------------------


@functools.lru_cache(maxsize=16)
def _space_at(base_dir: str) -> ParamSpace:
    """The space recorded by ``create_config`` (read once; the base copy never changes)."""
    entries = json.loads((Path(base_dir) / SPACE_FILE).read_text())["tensors"]
    return ParamSpace([(name, shape, DTYPES[dtype]) for name, shape, dtype in entries])


def _check_tokenizer_loads(directory: Path) -> None:
    """Refuse a base whose tokenizer files are missing or do not load: every prompt goes through them."""
    from transformers import AutoTokenizer

    if not hf_files.has_vocabulary(directory):
        raise ValueError(
            f"base: its tokenizer does not load (no {', '.join(hf_files.VOCAB_FILES)}); "
            "save it next to the model with tokenizer.save_pretrained(dir)"
        )
    try:
        AutoTokenizer.from_pretrained(directory)
    except Exception as e:  # transformers raises OSError, ValueError or a tokenizers error depending on the files
        raise ValueError(f"base: its tokenizer does not load ({str(e).splitlines()[0]})") from None


def _write_space(path: Path, space: ParamSpace) -> None:
    tensors = [[s.name, list(s.shape), DTYPE_NAMES[s.dtype]] for s in space]
    path.write_text(json.dumps({"tensors": tensors}, indent=0))


@functools.lru_cache(maxsize=8)
def _tokenizer_at(base_dir: str):
    """The base's tokenizer, loaded once per base directory."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_dir)


@functools.lru_cache(maxsize=8)
def _hf_config_at(base_dir: str):
    """The base's transformers config, loaded once per base directory."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_dir)


@functools.lru_cache(maxsize=8)
def _eos_ids_at(base_dir: str) -> frozenset[int]:
    """Every token that ends a completion: the tokenizer's EOS and the generation config's (an int or a list)."""
    ids = {_tokenizer_at(base_dir).eos_token_id, getattr(_hf_config_at(base_dir), "eos_token_id", None)}
    generation_config = Path(base_dir) / "generation_config.json"
    if generation_config.is_file():
        ids.add(json.loads(generation_config.read_text()).get("eos_token_id"))
    flat = set()
    for value in ids:
        flat.update(value if isinstance(value, list) else [value])
    return frozenset(i for i in flat if hf_files.is_int(i))


def _pad_id(base_dir: str) -> int:
    """The token padding is filled with (masked out, so any id works): pad, else EOS, else 0."""
    tokenizer = _tokenizer_at(base_dir)
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def _encode(base_dir: str, texts: list[str]) -> list[list[int]]:
    """Prompt token ids: special tokens as the tokenizer adds them, never two BOS, never empty."""
    tokenizer = _tokenizer_at(base_dir)
    bos, start = tokenizer.bos_token_id, tokenizer.bos_token_id
    if start is None:
        start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else _pad_id(base_dir)
    rows = tokenizer(list(texts), add_special_tokens=True)["input_ids"] if texts else []
    out = []
    for text, ids in zip(texts, rows, strict=True):
        # A chat template that writes the BOS text itself gets a second one from the tokenizer: keep one.
        if bos is not None and ids[:2] == [bos, bos] and text.startswith(tokenizer.bos_token):
            ids = ids[1:]
        out.append(list(ids) or [start])  # an empty prompt starts from BOS, as transformers' generate does
    return out


def _target_ids(base_dir: str, prompt: str, prompt_ids: list[int], target: str) -> list[int]:
    """The target's tokens as they follow the prompt: the tail of encode(prompt + target) when it extends it."""
    whole = _encode(base_dir, [prompt + target])[0]
    if whole[: len(prompt_ids)] == prompt_ids and len(whole) > len(prompt_ids):
        return whole[len(prompt_ids) :]
    # The boundary merged into one token: encode the target alone.
    return _tokenizer_at(base_dir)(target, add_special_tokens=False)["input_ids"] or whole[-1:]


def _batches(rows: list[list[int]], size: int) -> Iterator[list[int]]:
    """Row indices in batches of ``size``, similar lengths together (less padding)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


# --- argument checks ---------------------------------------------------------------------------------------


def _check_settings(config: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """Unknown fields refused (typos), and the settings with defaults checked; the same dict back."""
    extra = sorted(set(config) - allowed)
    if extra:
        raise ValueError(f"config.{extra[0]}: unknown field; the causal-lm config has {', '.join(sorted(allowed))}")
    if config["dtype"] not in COMPUTE_DTYPES:
        raise ValueError(f"config.dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {config['dtype']!r}")
    try:
        re.compile(config["answer_pattern"])
    except (re.error, TypeError) as e:
        raise ValueError(f"config.answer_pattern: not a regular expression ({e})") from None
    for field in ("max_new_tokens", "batch_size"):
        if not hf_files.is_int(config[field]) or config[field] < 1:
            raise ValueError(f"config.{field}: expected a positive integer, got {config[field]!r}")
    return config


def _check_strings(values: Any, field: str, allow_empty: bool = False) -> None:
    if not isinstance(values, list | tuple):
        raise ValueError(f"{field}: expected a list of strings, got {type(values).__name__}")
    for i, v in enumerate(values):
        if not isinstance(v, str) or (not allow_empty and not v):
            raise ValueError(f"{field}[{i}]: expected a {'' if allow_empty else 'non-empty '}string, got {v!r}")


def _check_sampling(s: Any, field: str) -> None:
    if not isinstance(s, Sampling):
        raise ValueError(f"{field}: expected a Sampling, got {type(s).__name__}")
    if not hf_files.is_int(s.max_tokens) or s.max_tokens < 1:
        raise ValueError(f"{field}.max_tokens: expected a positive integer, got {s.max_tokens!r}")
    if not isinstance(s.temperature, int | float) or not math.isfinite(s.temperature) or s.temperature < 0:
        raise ValueError(f"{field}.temperature: expected a number >= 0, got {s.temperature!r}")
    if not isinstance(s.top_p, int | float) or not 0 < s.top_p <= 1:
        raise ValueError(f"{field}.top_p: expected a number in (0, 1], got {s.top_p!r}")
    if not isinstance(s.stop, tuple | list) or not all(isinstance(x, str) and x for x in s.stop):
        raise ValueError(f"{field}.stop: expected non-empty strings, got {s.stop!r}")
    if s.seed is not None and not hf_files.is_int(s.seed):
        raise ValueError(f"{field}.seed: expected an integer or null, got {s.seed!r}")
