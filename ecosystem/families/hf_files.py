"""Hugging Face model directories: which files hold what, how a fine-tune is checked against its base,
and how a model is built from or written back to ``save_pretrained``'s layout.

The ``causal-lm`` family uses these; they know transformers' directory conventions, not the ecosystem.
Directory checks raise ``RegistrationRefused`` with a one-line message naming the first mismatch.
"""

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecosystem.errors import RegistrationRefused
from m2n2.checkpoint import TensorSource, fsync_path, read_header, write_safetensors
from m2n2.space import ParamSpace, TensorSpec

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
CONVERT_HINT = (
    "convert them with model.save_pretrained(dir, safe_serialization=True) "
    "or safetensors.torch.save_file(state_dict, 'model.safetensors')"
)
# Files that define a tokenizer's vocabulary; a directory with none of them uses the base's tokenizer.
VOCAB_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
NON_WEIGHT_NAMES = ("merges.txt", "vocab.txt")
NON_WEIGHT_SUFFIXES = (".json", ".model", ".jinja", ".tiktoken")
CHAT_TEMPLATES_DIR = "additional_chat_templates"  # where transformers saves named chat templates
# config.json fields that do not change what the weights compute: bookkeeping, token ids (the tokenizer
# check covers them), initialisation, and generation defaults.
IGNORED_CONFIG_FIELDS = frozenset(
    {
        "_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "use_cache",
        "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "_experts_implementation",
        "output_attentions", "output_hidden_states", "return_dict", "torchscript", "use_bfloat16",
        "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
        "initializer_range", "initializer_factor", "pretraining_tp", "id2label", "label2id", "problem_type",
        "finetuning_task", "task_specific_params", "tokenizer_class", "prefix", "chunk_size_feed_forward",
        "tf_legacy_loss", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
        "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
        "no_repeat_ngram_size", "num_return_sequences", "bad_words_ids", "forced_bos_token_id",
        "forced_eos_token_id", "remove_invalid_values", "suppress_tokens", "begin_suppress_tokens",
        "output_scores", "return_dict_in_generate", "diversity_penalty", "num_beam_groups",
        "exponential_decay_length_penalty", "encoder_no_repeat_ngram_size",
    }
)  # fmt: skip
# The fields compared first, so the message names the most telling difference.
FIRST_CONFIG_FIELDS = (
    "model_type", "architectures", "vocab_size", "hidden_size", "n_embd", "num_hidden_layers", "n_layer",
    "num_attention_heads", "n_head", "num_key_value_heads", "head_dim", "intermediate_size", "n_inner",
)  # fmt: skip


# --- files -------------------------------------------------------------------------------------------------


def safetensors_files(directory: Path) -> list[Path]:
    """``model.safetensors``, or the shards ``model.safetensors.index.json`` lists; pickles refused by name."""
    if (directory / WEIGHTS).is_file():
        return [directory / WEIGHTS]
    if (directory / WEIGHTS_INDEX).is_file():
        return indexed_shards(directory, WEIGHTS_INDEX)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise RegistrationRefused(f"{pickles[0]}: pickle-based weights are never loaded; {CONVERT_HINT}")
    others = sorted(p.name for p in directory.glob("*.safetensors"))
    if "adapter_model.safetensors" in others:
        raise RegistrationRefused(
            "adapter_model.safetensors is a PEFT adapter; merge it (merge_and_unload) and save_pretrained the model"
        )
    found = f" (found {', '.join(others)})" if others else ""
    raise RegistrationRefused(f"{directory}: no {WEIGHTS} or {WEIGHTS_INDEX}{found}")


def copy_model_files(source: Path, target: Path, skip: frozenset[str] | set[str] = frozenset()) -> list[Path]:
    """Copy config, generation config, tokenizer and chat template files (never weights); the files written."""
    written = []
    for path in sorted(source.iterdir()):
        if path.is_file() and _is_non_weight_file(path.name) and path.name not in skip:
            shutil.copyfile(path, target / path.name)  # follows the hub cache's symlinks to the blobs
            written.append(target / path.name)
    templates = source / CHAT_TEMPLATES_DIR
    if templates.is_dir():
        shutil.copytree(templates, target / CHAT_TEMPLATES_DIR, dirs_exist_ok=True)
        written += sorted(p for p in (target / CHAT_TEMPLATES_DIR).rglob("*") if p.is_file())
    return written


def _is_non_weight_file(name: str) -> bool:
    if name.endswith(".index.json"):
        return False
    return name in NON_WEIGHT_NAMES or name.endswith(NON_WEIGHT_SUFFIXES)


def check_no_custom_code(directory: Path) -> None:
    """Refuse models whose config maps to repository code (``auto_map``): nothing here runs remote code."""
    if not (directory / "config.json").is_file():
        raise RegistrationRefused(f"{directory}: no config.json")
    for name in ("config.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file() and "auto_map" in read_json(path):
            raise RegistrationRefused(f"{name}: maps to custom code (auto_map); models that need it are not supported")


# --- checks against the base -----------------------------------------------------------------------------


def check_config(base_dir: Path, directory: Path) -> None:
    """Refuse a ``config.json`` whose architecture differs from the base's, naming the first differing field."""
    if not (directory / "config.json").is_file():
        raise RegistrationRefused(f"{directory}: no config.json (save_pretrained writes one next to the weights)")
    mine, theirs = read_json(base_dir / "config.json"), read_json(directory / "config.json")
    for field in ("model_type", "architectures"):
        if mine.get(field) != theirs.get(field):
            raise RegistrationRefused(_config_mismatch(field, theirs.get(field), mine.get(field)))
    difference = _first_difference(_with_defaults(mine), _with_defaults(theirs))
    if difference is not None:
        raise RegistrationRefused(_config_mismatch(*difference))


def _first_difference(mine: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first architecture field (dotted into sub-configs) whose values differ: (field, theirs, mine)."""
    rest = sorted((set(mine) | set(theirs)) - set(FIRST_CONFIG_FIELDS))
    for field in (*FIRST_CONFIG_FIELDS, *rest):
        if field in IGNORED_CONFIG_FIELDS or "dropout" in field or field.endswith("_pdrop"):
            continue  # dropout is off at inference
        a, b = mine.get(field), theirs.get(field)
        if isinstance(a, dict) and isinstance(b, dict):  # a sub-config (text_config, ...): its fields by name
            found = _first_difference(a, b, f"{prefix}{field}.")
            if found is not None:
                return found
        elif a != b:
            return f"{prefix}{field}", b, a
    return None


def _config_mismatch(field: str, theirs: Any, mine: Any) -> str:
    return f"config.json: {field} is {theirs!r}, the base's is {mine!r}"


def _with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The config as transformers reads it (defaults filled, legacy names mapped), else the raw JSON."""
    from transformers import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[raw["model_type"]].from_dict(raw).to_dict()
    except Exception:  # an unknown model_type or a config transformers refuses: compare what is written
        return raw


def check_tokenizer(base_dir: Path, directory: Path, load_base: Callable[[str], Any]) -> None:
    """Refuse a tokenizer whose vocabulary (or BPE merges) differs from the base's; none at all is fine."""
    if not has_vocabulary(directory):
        return
    if (base_dir / "tokenizer.json").is_file() and (directory / "tokenizer.json").is_file():
        difference = _tokenizer_json_difference(
            read_json(base_dir / "tokenizer.json"), read_json(directory / "tokenizer.json")
        )
    else:
        from transformers import AutoTokenizer

        try:
            theirs = AutoTokenizer.from_pretrained(directory).get_vocab()
        except Exception as e:
            raise RegistrationRefused(f"{directory}: tokenizer files do not load ({e})") from None
        difference = _vocab_difference(load_base(str(base_dir)).get_vocab(), theirs)
    if difference:
        raise RegistrationRefused(f"tokenizer differs from the base's: {difference}")


def has_vocabulary(directory: Path) -> bool:
    """Whether the directory holds a tokenizer's vocabulary (transformers makes an empty one up otherwise)."""
    return any((directory / name).is_file() for name in VOCAB_FILES) or any(directory.glob("*.tiktoken"))


def _tokenizer_json_difference(mine: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """The first difference between two ``tokenizer.json`` models and added tokens (None if they match)."""
    a, b = mine.get("model") or {}, theirs.get("model") or {}
    if a.get("type") != b.get("type"):
        return f"model type {b.get('type')!r}, the base's {a.get('type')!r}"
    difference = _vocab_difference(_model_vocab(a), _model_vocab(b))
    if difference:
        return difference
    merges_a, merges_b = _merges(a), _merges(b)
    if merges_a != merges_b:
        pairs = zip(merges_a, merges_b, strict=False)  # the lengths may differ; the shorter one ends the scan
        i = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(merges_a), len(merges_b)))
        return f"BPE merges differ from merge #{i}"
    added_a = {t["content"]: t["id"] for t in mine.get("added_tokens") or []}
    added_b = {t["content"]: t["id"] for t in theirs.get("added_tokens") or []}
    difference = _vocab_difference(added_a, added_b)
    return f"added tokens: {difference}" if difference else None


def _model_vocab(model: dict[str, Any]) -> dict[str, int]:
    vocab = model.get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], the id is the position
        return {piece: i for i, (piece, _) in enumerate(vocab)}
    return dict(vocab)


def _merges(model: dict[str, Any]) -> list[tuple[str, ...]]:
    """Merges as pairs, whichever of the two spellings (``"a b"`` or ``["a", "b"]``) the file uses."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]


def _vocab_difference(mine: dict[str, int], theirs: dict[str, int]) -> str | None:
    if len(mine) != len(theirs):
        return f"vocabulary has {len(theirs)} tokens, the base's {len(mine)}"
    for token, token_id in mine.items():
        if theirs.get(token) != token_id:
            return f"token {token!r} has id {theirs.get(token)}, {token_id} in the base's"
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``RegistrationRefused`` naming the file otherwise."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistrationRefused(f"{path.name}: not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise RegistrationRefused(f"{path.name}: expected a JSON object")
    return value


def indexed_shards(directory: Path, index: str) -> list[Path]:
    """The shard files a safetensors index (``*.safetensors.index.json``) maps tensors to, each checked to exist."""
    weight_map = read_json(directory / index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise RegistrationRefused(f"{index}: expected a non-empty 'weight_map' of tensor -> file")
    files = []
    for name in sorted(set(weight_map.values())):
        if not isinstance(name, str) or Path(name).name != name or not (directory / name).is_file():
            raise RegistrationRefused(f"{index}: lists shard {name!r}, which is not in {directory}")
        files.append(directory / name)
    return files


def to_compute(tensor: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    """A checkpoint tensor on ``device``; floating-point ones in the compute dtype."""
    return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)


def is_int(value: Any) -> bool:
    """An integer config value (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


# --- the model on the meta device ----------------------------------------------------------------------


def empty_model(directory: str | Path) -> nn.Module:
    """The directory's ``AutoModelForCausalLM`` on the meta device: its structure, no memory, no random init."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(directory)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise RegistrationRefused(
            f"config.json: {config.model_type!r} is not a causal LM transformers knows ({e})"
        ) from None


def checkpoint_space(directory: Path, files: list[Path]) -> ParamSpace:
    """The checkpoint's tensors (names, shapes, dtypes from the headers) in the model's state-dict order."""
    found: dict[str, TensorSpec] = {}
    for path in files:
        for spec in read_header(path)[0]:
            if spec.name in found:
                raise RegistrationRefused(f"{path.name}: tensor {spec.name!r} is also in another shard")
            found[spec.name] = spec
    model = empty_model(directory)
    order = list(model.state_dict())
    unknown = sorted(set(found) - set(order))
    if unknown:
        raise RegistrationRefused(
            f"checkpoint tensor {unknown[0]!r} is not in {type(model).__name__}'s state dict; names that need "
            "transformers' key conversion (legacy prefixes, per-expert MoE weights) are not supported"
        )
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - dict(model.named_parameters()).keys()
    missing = [name for name in order if name not in found and name not in tied]
    if missing:
        raise RegistrationRefused(f"checkpoint lacks tensor {missing[0]!r} of {type(model).__name__}")
    return ParamSpace([(name, found[name].shape, found[name].dtype) for name in order if name in found])


def materialise_buffers(model: nn.Module, device: str | torch.device) -> None:
    """Compute the buffers no checkpoint holds (Llama's rotary ``inv_freq``), left on meta by the meta build.

    As ``from_pretrained`` does: the owning module is re-initialised by the model's own ``_init_weights``,
    with its parameters swapped for meta placeholders meanwhile, so loaded weights are never touched.
    """
    owners: dict[str, list[str]] = {}
    for name, buffer in model.named_buffers(remove_duplicate=False):
        if buffer.is_meta:
            module_name, _, buffer_name = name.rpartition(".")
            owners.setdefault(module_name, []).append(buffer_name)
    for module_name, names in owners.items():
        module = model.get_submodule(module_name)
        for name in names:  # NaN until initialised, so a buffer the init skips is caught below
            module._buffers[name] = torch.full_like(module._buffers[name], math.nan, device=device)
        loaded = dict(module._parameters)
        for name, param in loaded.items():
            if param is not None:
                module._parameters[name] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=False)
        try:
            model._init_weights(module)
        finally:
            module._parameters.update(loaded)
        for name in names:
            buffer = module._buffers[name]
            if buffer.is_floating_point() and bool(buffer.isnan().any()):
                raise RegistrationRefused(f"buffer {module_name}.{name} is not computed by {type(model).__name__}")
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RegistrationRefused(f"{type(model).__name__}: tensor {leftover[0]!r} was neither loaded nor computed")


# --- writing save_pretrained's layout ------------------------------------------------------------------


def write_weights(directory: Path, space: ParamSpace, source: TensorSource, max_shard_bytes: int) -> list[Path]:
    """``model.safetensors``, or ``model-0000i-of-0000N.safetensors`` shards and their index, one tensor at a time."""
    shards = _shards(space, max_shard_bytes)
    names = (
        [WEIGHTS]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    written = []
    for name, specs in zip(names, shards, strict=True):
        shard = ParamSpace([(s.name, s.shape, s.dtype) for s in specs])
        tensors = ((s.name, source.get(s.name)) for s in specs)
        written.append(write_safetensors(directory / name, shard, tensors, metadata={"format": "pt"}))
    if len(shards) > 1:
        total = sum(s.numel * s.dtype.itemsize for s in space)
        index = {
            "metadata": {"total_parameters": space.dim, "total_size": total},
            "weight_map": {s.name: name for name, specs in zip(names, shards, strict=True) for s in specs},
        }
        written.append(_write_json(directory / WEIGHTS_INDEX, index))
    _remove_stale_weights(directory, {p.name for p in written})
    return written


def _shards(space: ParamSpace, max_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive tensors grouped so no shard passes ``max_bytes`` (unless one tensor alone does)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in space:
        nbytes = spec.numel * spec.dtype.itemsize
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    return shards


def _remove_stale_weights(directory: Path, keep: set[str]) -> None:
    """Delete weights of an earlier export in this directory: transformers would load them instead."""
    for path in directory.iterdir():
        stale = path.name in (WEIGHTS, WEIGHTS_INDEX) or SHARD.match(path.name)
        if stale and path.name not in keep:
            logger.info("removing %s from an earlier export", path)
            path.unlink()


def _write_json(path: Path, value: Any) -> Path:
    """Write JSON atomically (temp file, fsync, rename), as the weights are."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
