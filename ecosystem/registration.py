"""Checks on a specialist checkpoint before anything is stored: format, layout, dtypes, finite values.

Nothing here unpickles or writes. Each refusal is a ``RegistrationRefused`` whose message
names the limit or the tensor, so the uploader knows what to fix.
"""

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ecosystem.errors import RegistrationRefused
from m2n2.checkpoint import MAX_HEADER_BYTES, SafetensorsSource, read_header, sha256_file
from m2n2.errors import InvalidCheckpoint
from m2n2.space import ParamSpace

ONLY_SAFETENSORS = (
    "only safetensors is accepted (pickle-based .bin/.pt/.pth/.ckpt files are never loaded); "
    "convert with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # torch.save's default format is a zip archive
CHUNK_ELEMENTS = 1 << 24  # bounds the temporary masks of the NaN/Inf scan on huge tensors


@dataclass(frozen=True)
class CheckedCheckpoint:
    """A checkpoint that passed every check; ``space`` is in the expected order with the files' dtypes.

    ``paths`` holds one file, or the shards of one model; ``sha256`` is the single file's hash (a sharded
    model gets its content address when its shards are written into one artifact).
    """

    paths: tuple[Path, ...]
    sha256: str | None
    n_bytes: int
    space: ParamSpace
    metadata: dict[str, str]

    @property
    def path(self) -> Path:
        return self.paths[0]


def check_checkpoint(path: str | os.PathLike, expected: ParamSpace, max_bytes: int) -> CheckedCheckpoint:
    """Validate a safetensors file against ``expected``, cheapest checks first; raise ``RegistrationRefused``."""
    checked = check_shards([path], expected, max_bytes)
    return CheckedCheckpoint(
        checked.paths, sha256_file(checked.path)[0], checked.n_bytes, checked.space, checked.metadata
    )


def check_shards(paths: Sequence[str | os.PathLike], expected: ParamSpace, max_bytes: int) -> CheckedCheckpoint:
    """Validate the safetensors shards of one model together: every tensor once, as ``expected`` says."""
    paths = tuple(Path(p) for p in paths)
    if not paths:
        raise RegistrationRefused("no safetensors file to register")
    n_bytes, found, metadata = 0, [], {}
    for path in paths:
        n_bytes += _file_size(path)
        if n_bytes > max_bytes:
            what = "file" if len(paths) == 1 else "checkpoint"
            raise RegistrationRefused(f"{path.name}: {what} is {n_bytes} bytes, over the {max_bytes}-byte limit")
        _refuse_pickle_or_zip(path, path.stat().st_size)
        try:
            space, meta = read_header(path, min(MAX_HEADER_BYTES, max_bytes))
        except InvalidCheckpoint as e:
            raise RegistrationRefused(str(e)) from None
        found += [(path, spec) for spec in space]
        metadata = metadata or meta
    owners: dict[str, Path] = {}
    for path, spec in found:
        if spec.name in owners:
            raise RegistrationRefused(f"tensor {spec.name!r} is in both {owners[spec.name].name} and {path.name}")
        owners[spec.name] = path
    combined = ParamSpace([(spec.name, spec.shape, spec.dtype) for _, spec in found])
    space = _check_layout(paths[0].name if len(paths) == 1 else paths[0].parent.name, combined, expected)
    for path in paths:
        _check_values(path, space, owners)
    return CheckedCheckpoint(paths, None, n_bytes, space, metadata)


def _file_size(path: Path) -> int:
    if not path.is_file():
        raise RegistrationRefused(f"{path.name}: not a file")
    return path.stat().st_size


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


def _check_values(path: Path, space: ParamSpace, owners: dict[str, Path]) -> None:
    """Refuse NaN or Inf, reading one tensor at a time so memory stays at the largest tensor."""
    with SafetensorsSource(path) as source:
        for spec in space:
            if not spec.dtype.is_floating_point or owners[spec.name] != path:
                continue
            flat = source.get(spec.name).reshape(-1)  # (numel,)
            for chunk in flat.split(CHUNK_ELEMENTS):
                if chunk.isnan().any():
                    raise RegistrationRefused(f"{path.name}: tensor {spec.name!r} contains NaN")
                if chunk.isinf().any():
                    raise RegistrationRefused(f"{path.name}: tensor {spec.name!r} contains Inf")
