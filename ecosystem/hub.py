"""Model references: a local directory, or a Hugging Face hub id resolved to a snapshot in the local cache.

A reference is either a directory (used as it is) or ``org/name`` / ``org/name@revision``. Hub ids go
through ``huggingface_hub.snapshot_download``, restricted to safetensors weights, JSON and tokenizer files,
so a pickled ``.bin`` or ``.pt`` is never downloaded. huggingface_hub reads its own environment:
``HF_HUB_CACHE`` (where snapshots live) and ``HF_HUB_OFFLINE`` (use only the cache, never the network).
"""

import logging
import re
from pathlib import Path

from ecosystem.errors import InvalidInput

logger = logging.getLogger(__name__)

# What a causal LM (or a diffusers pipeline) needs: weights as safetensors, configs, tokenizer and templates.
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.json",
    "*.txt",
    "*.model",
    "*.jinja",
    "*.tiktoken",
]
IGNORE_PATTERNS = [
    *("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.msgpack", "*.h5", "*.onnx", "*.gguf"),
    "consolidated*.safetensors",  # a second copy of the weights in another tool's layout (Mistral's repositories)
]
# The hub's own rule for repository ids: two names of letters, digits, '-', '_' and '.'.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotAvailable(InvalidInput, ValueError):
    """A model reference that is neither a directory nor a hub id that can be fetched (or found in the cache)."""


def parse(ref: str) -> tuple[str, str | None]:
    """``org/name@revision`` as ``(org/name, revision)``; the revision is None when absent."""
    repo_id, _, revision = ref.partition("@")
    if not HUB_ID.match(repo_id) or ".." in repo_id or (revision == "" and "@" in ref):
        raise ModelNotAvailable(
            f"{ref!r} is neither an existing directory nor a hub id like 'org/name' or 'org/name@revision'"
        )
    return repo_id, revision or None


def resolve(ref: str | Path, *, cache_dir: str | Path | None = None, local_files_only: bool | None = None) -> Path:
    """The local directory holding the model ``ref`` names, downloading a hub snapshot when allowed.

    Args:
        ref: a directory, or a hub id ``org/name`` optionally pinned as ``org/name@revision``.
        cache_dir: the hub cache to use; None means huggingface_hub's own (``HF_HUB_CACHE``).
        local_files_only: never touch the network; None means "when ``HF_HUB_OFFLINE`` is set".
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotAvailable(f"{ref}: a file; expected a model directory or a hub id like 'org/name'")
    repo_id, revision = parse(str(ref))
    # Imported here: resolving a directory needs none of it.
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = constants.is_offline_mode() if local_files_only is None else local_files_only
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    logger.info("resolving %s (revision %s) %s", repo_id, revision or "main", "from the cache" if offline else "")
    try:
        snapshot = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
        )
    except LocalEntryNotFoundError:
        how = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the hub could not be reached"
        raise ModelNotAvailable(
            f"{ref!r} is not in the Hugging Face cache {cache} and {how}; download it first "
            f"(`hf download {repo_id}`{f' --revision {revision}' if revision else ''}) or pass a local directory"
        ) from None
    except HfHubHTTPError as e:
        raise ModelNotAvailable(f"{ref!r} could not be fetched from the hub: {str(e).splitlines()[0]}") from None
    return Path(snapshot)
