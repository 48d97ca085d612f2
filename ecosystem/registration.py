"""Checks on a specialist checkpoint before anything is stored: format, layout, dtypes, finite values.

Nothing here unpickles or writes. Each refusal is a ``RegistrationRefused`` whose message
names the limit or the tensor, so the uploader knows what to fix.
"""

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ecosystem.errors import RegistrationRefused
from m2n2.checkpoint import MAX_HEADER_BYTES, read_header
from m2n2.errors import InvalidCheckpoint
from m2n2.space import ParamSpace

ONLY_SAFETENSORS = (
    "only safetensors is accepted (pickle-based .bin/.pt/.pth/.ckpt files are never loaded); "
    "convert with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # torch.save's default format is a zip archive
CHUNK_ELEMENTS = 1 << 24  # bounds the temporary masks of the NaN/Inf scan on huge tensors
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class CheckedCheckpoint:
    """A checkpoint that passed every check; ``space`` is in the expected order with the file's dtypes."""

    path: Path
    sha256: str
    n_bytes: int
    space: ParamSpace
    metadata: dict[str, str]


def check_checkpoint(path: str | os.PathLike, expected: ParamSpace, max_bytes: int) -> CheckedCheckpoint:
    """Validate a safetensors file against ``expected``, cheapest checks first; raise ``RegistrationRefused``."""
    path = Path(path)
    if not path.is_file():
        raise RegistrationRefused(f"{path.name}: not a file")
    n_bytes = path.stat().st_size
    if n_bytes > max_bytes:
        raise RegistrationRefused(f"{path.name}: file is {n_bytes} bytes, over the {max_bytes}-byte limit")
    _refuse_pickle_or_zip(path, n_bytes)
    try:
        found, metadata = read_header(path, min(MAX_HEADER_BYTES, max_bytes))
    except InvalidCheckpoint as e:
        raise RegistrationRefused(str(e)) from None
    space = _check_layout(path.name, found, expected)
    _check_values(path, space)
    return CheckedCheckpoint(path, _sha256(path), n_bytes, space, metadata)


def _refuse_pickle_or_zip(path: Path, n_bytes: int) -> None:
    """Give pickles and zips their own message; read_header alone would only say the header is bad."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9:
        # A safetensors file starts with a little-endian header length then '{'. Test that first:
        # a real header of e.g. 640 bytes begins b"\x80\x02", which alone would look like a pickle.
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= n_bytes - 8 and head[8:9] == b"{":
            return
    # Pickle protocols 2-5 open with PROTO (0x80) and the protocol number; legacy torch.save writes protocol 2.
    if head.startswith(ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        kind = "a zip archive (torch.save's format)" if head.startswith(ZIP_MAGIC) else "a pickle"
        raise RegistrationRefused(f"{path.name}: this is {kind}; {ONLY_SAFETENSORS}")


def _check_layout(filename: str, found: ParamSpace, expected: ParamSpace) -> ParamSpace:
    """Same names and shapes as ``expected`` (any file order), dtypes castable; the file's space in expected order."""
    unexpected = [name for name in found.names if name not in expected]
    specs = []
    for spec in expected:
        if spec.name not in found:
            hint = f" (the file has unexpected tensor {unexpected[0]!r})" if unexpected else ""
            raise RegistrationRefused(f"{filename}: missing tensor {spec.name!r}{hint}")
        got = found[spec.name]
        if got.shape != spec.shape:
            raise RegistrationRefused(
                f"{filename}: tensor {spec.name!r} has shape {list(got.shape)}, expected {list(spec.shape)}"
            )
        if not _castable(got.dtype, spec.dtype):
            raise RegistrationRefused(
                f"{filename}: tensor {spec.name!r} has dtype {_dtype_name(got.dtype)}, which cannot be cast to "
                f"{_dtype_name(spec.dtype)} (floating parameters accept only floating dtypes)"
            )
        specs.append((spec.name, spec.shape, got.dtype))
    if unexpected:
        raise RegistrationRefused(f"{filename}: unexpected tensor {unexpected[0]!r}")
    return ParamSpace(specs)


def _castable(got: torch.dtype, want: torch.dtype) -> bool:
    # Precision may change (float16 into a float32 space); the kind may not: an integer or bool
    # tensor in a floating slot is a different model, not a different precision.
    return got.is_floating_point if want.is_floating_point else got == want


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_values(path: Path, space: ParamSpace) -> None:
    """Refuse NaN or Inf, reading one tensor at a time so memory stays at the largest tensor."""
    try:
        f = safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own SafetensorError (not exported stably)
        raise RegistrationRefused(f"{path.name}: safetensors could not open the file ({e})") from None
    with f:
        for spec in space:
            if not spec.dtype.is_floating_point:
                continue
            flat = f.get_tensor(spec.name).reshape(-1)  # (numel,)
            for chunk in flat.split(CHUNK_ELEMENTS):
                if chunk.isnan().any():
                    raise RegistrationRefused(f"{path.name}: tensor {spec.name!r} contains NaN")
                if chunk.isinf().any():
                    raise RegistrationRefused(f"{path.name}: tensor {spec.name!r} contains Inf")


def _sha256(path: Path) -> str:
    """Hex sha256 of the file, streamed: the content address the store files it under."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
