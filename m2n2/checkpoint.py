"""Safetensors checkpoints: bounded header parsing, lazy tensor reads, streaming writes.

Nothing here unpickles: a checkpoint is a safetensors file or an in-memory state dict.
Writes go to a temporary name, are fsynced, then renamed, so a reader never sees a
half-written file.
"""

import contextlib
import hashlib
import json
import mmap as _mmap
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import torch

from m2n2.errors import InvalidCheckpoint
from m2n2.space import ParamSpace

# The safetensors format caps its JSON header at 100 MB; most are a few KB.
MAX_HEADER_BYTES = 100 * 1024 * 1024
OVERLAP_BYTES = 1 << 20  # chunks from this size on are hashed and written while the next one is computed
# Free-form metadata is stored and echoed back (model cards); real ones are a few hundred bytes.
MAX_METADATA_BYTES = 64 * 1024

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
ACCEPTED = "a .safetensors file (pickle-based .bin/.pt/.ckpt checkpoints are never loaded)"


class TensorSource(Protocol):
    """Anything that hands out a model's tensors one at a time."""

    space: ParamSpace

    def get(self, name: str) -> torch.Tensor: ...


class StateDictSource:
    """Tensors held in memory."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.state_dict = dict(state_dict)
        self.space = ParamSpace.from_state_dict(self.state_dict)

    def get(self, name: str) -> torch.Tensor:
        return self.state_dict[name]


class SafetensorsSource:
    """Tensors read from a safetensors file on demand, one at a time.

    By default each ``get`` reads the tensor's bytes into fresh memory (``pread``), so a
    process streaming through two large parents holds one tensor of each, not the pages
    of both files. With ``mmap=True`` tensors are copy-on-write views of the mapped file:
    no copy at all, and processes serving the same file share its pages.
    """

    _fd: int | None = None  # class defaults, so ``close`` works on an instance whose header was refused
    _map: _mmap.mmap | None = None

    def __init__(self, path: str | os.PathLike, max_header_bytes: int = MAX_HEADER_BYTES, mmap: bool = False) -> None:
        self.path = Path(path)
        self.space, self.metadata, self._offsets, self._data_start = _parse_header(self.path, max_header_bytes)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._map = _mmap.mmap(self._fd, 0, access=_mmap.ACCESS_COPY) if mmap else None

    def get(self, name: str) -> torch.Tensor:
        if self._fd is None:
            raise InvalidCheckpoint(f"{self.path.name}: source is closed")
        spec = self.space[name]
        begin, end = self._offsets[name]
        if spec.numel == 0:
            return torch.empty(spec.shape, dtype=spec.dtype)
        if self._map is not None:
            flat = torch.frombuffer(self._map, dtype=spec.dtype, count=spec.numel, offset=self._data_start + begin)
            return flat.view(spec.shape)
        tensor = torch.empty(spec.shape, dtype=spec.dtype)
        buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())  # (n_bytes,) aliasing the tensor
        done, position = 0, self._data_start + begin
        while done < end - begin:
            n = os.preadv(self._fd, [buffer[done:]], position + done)
            if n == 0:
                raise InvalidCheckpoint(f"{self.path.name}: file ended inside tensor {name!r}")
            done += n
        return tensor

    def close(self) -> None:
        """Release the file; tensors already handed out stay valid (a mapping lives while they do)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._map = None, None

    def __enter__(self) -> "SafetensorsSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class ShardedSource:
    """One model split over several safetensors files (a sharded Hugging Face checkpoint)."""

    def __init__(self, paths: Iterable[str | os.PathLike], mmap: bool = False) -> None:
        self.shards = [SafetensorsSource(p, mmap=mmap) for p in paths]
        self._owner: dict[str, SafetensorsSource] = {}
        for shard in self.shards:
            for spec in shard.space:
                if spec.name in self._owner:
                    raise InvalidCheckpoint(
                        f"tensor {spec.name!r} is in both {self._owner[spec.name].path.name} and {shard.path.name}"
                    )
                self._owner[spec.name] = shard
        self.space = ParamSpace([(s.name, s.shape, s.dtype) for shard in self.shards for s in shard.space])

    def get(self, name: str) -> torch.Tensor:
        return self._owner[name].get(name)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def __enter__(self) -> "ShardedSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(paths: Sequence[str | os.PathLike], mmap: bool = False) -> "SafetensorsSource | ShardedSource":
    """A tensor source over one safetensors file or the shards of one model."""
    if len(paths) == 1:
        return SafetensorsSource(paths[0], mmap=mmap)
    return ShardedSource(paths, mmap=mmap)


def read_header(path: str | os.PathLike, max_header_bytes: int = MAX_HEADER_BYTES) -> tuple[ParamSpace, dict[str, str]]:
    """Parse and check a safetensors header without reading any tensor data.

    Returns the parameter space (tensors in file order) and the free-form metadata.
    Raises ``InvalidCheckpoint`` saying what is wrong and what is accepted.
    """
    space, metadata, _, _ = _parse_header(Path(path), max_header_bytes)
    return space, metadata


def _parse_header(
    path: Path, max_header_bytes: int
) -> tuple[ParamSpace, dict[str, str], dict[str, tuple[int, int]], int]:
    """``read_header`` plus each tensor's byte range in the data buffer and where that buffer starts."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise InvalidCheckpoint(f"{path.name}: file is {size} bytes, too short for {ACCEPTED}")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > max_header_bytes or 8 + header_len > size:
            raise InvalidCheckpoint(
                f"{path.name}: header length {header_len} is larger than the file or the "
                f"{max_header_bytes}-byte limit; expected {ACCEPTED}"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidCheckpoint(f"{path.name}: header is not JSON ({e}); expected {ACCEPTED}") from None
    except RecursionError:  # JSON nested thousands deep: a hostile header, not a checkpoint
        raise InvalidCheckpoint(f"{path.name}: header nests too deeply; expected {ACCEPTED}") from None
    if not isinstance(header, dict):
        raise InvalidCheckpoint(f"{path.name}: header is not a JSON object; expected {ACCEPTED}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidCheckpoint(f"{path.name}: __metadata__ is not a JSON object of strings; expected {ACCEPTED}")
    metadata_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if metadata_bytes > MAX_METADATA_BYTES:
        raise InvalidCheckpoint(
            f"{path.name}: __metadata__ holds {metadata_bytes} bytes, over the {MAX_METADATA_BYTES}-byte limit"
        )
    entries = []
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise InvalidCheckpoint(
                f"{path.name}: tensor {name!r} has an unsupported or malformed entry; expected {ACCEPTED}"
            ) from None
        numel = 1
        for d in shape:
            if d < 0:
                raise InvalidCheckpoint(f"{path.name}: tensor {name!r} has a negative dimension; expected {ACCEPTED}")
            numel *= d
        if end - begin != numel * dtype.itemsize:
            raise InvalidCheckpoint(
                f"{path.name}: tensor {name!r} offsets do not match its shape and dtype; expected {ACCEPTED}"
            )
        entries.append((begin, end, name, shape, dtype))
    entries.sort()
    data_len, cursor = size - 8 - header_len, 0
    for begin, end, name, _, _ in entries:
        if begin != cursor:
            raise InvalidCheckpoint(
                f"{path.name}: tensor {name!r} overlaps another or leaves a gap; expected {ACCEPTED}"
            )
        cursor = end
    if cursor != data_len:
        raise InvalidCheckpoint(
            f"{path.name}: data is {data_len} bytes but the header describes {cursor} (truncated?); expected {ACCEPTED}"
        )
    space = ParamSpace([(name, shape, dtype) for _, _, name, shape, dtype in entries])
    offsets = {name: (begin, end) for begin, end, name, _, _ in entries}
    return space, {str(k): str(v) for k, v in metadata.items()}, offsets, 8 + header_len


def safetensors_chunks(
    space: ParamSpace, tensors: Iterable[tuple[str, torch.Tensor]], metadata: Mapping[str, str] | None = None
) -> Iterator[bytes | memoryview]:
    """The bytes of a safetensors file, header first, then one tensor at a time in ``space`` order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for spec in space:
        nbytes = spec.numel * spec.dtype.itemsize
        header[spec.name] = {
            "dtype": DTYPE_NAMES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data buffer to 8 bytes
    yield struct.pack("<Q", len(raw)) + raw
    for spec, (name, tensor) in zip(space, tensors, strict=True):
        if name != spec.name or tuple(tensor.shape) != spec.shape:
            raise InvalidCheckpoint(
                f"expected tensor {spec.name!r} {list(spec.shape)}, got {name!r} {list(tensor.shape)}"
            )
        # reshape(-1) first: a 0-dim tensor cannot be viewed as bytes of another element size. The bytes
        # are lent, not copied: the consumer writes or hashes them before asking for the next tensor.
        yield memoryview(tensor.detach().to(spec.dtype).reshape(-1).contiguous().view(torch.uint8).numpy())


def safetensors_digest(
    space: ParamSpace, tensors: Iterable[tuple[str, torch.Tensor]], metadata: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """The sha256 and size that ``write_safetensors`` would produce, without writing anything."""
    digest, n_bytes = hashlib.sha256(), 0
    for chunk in safetensors_chunks(space, tensors, metadata):
        digest.update(chunk)
        n_bytes += len(chunk)
    return digest.hexdigest(), n_bytes


def write_safetensors(
    path: str | os.PathLike,
    space: ParamSpace,
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Stream tensors into a safetensors file in ``space`` order, atomically.

    Only one tensor is held at a time, so a child of two large parents is written
    without ever holding the whole child in memory.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_chunks(Path(tmp), safetensors_chunks(space, tensors, metadata))
        publish(Path(tmp), path, 0o644)  # weights are meant to be shared read-only
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_chunks(path: Path, chunks: Iterable[bytes | memoryview], durable: bool = True) -> tuple[str, int]:
    """Write ``chunks`` into the file at ``path``, hashing them on the way: (sha256, bytes).

    Large chunks are hashed and written by a second thread while the caller's generator makes the
    next one (hashing, file writes and torch arithmetic all release the GIL), so a streamed merge
    costs about its arithmetic, not arithmetic plus hashing plus writing; small ones are handled
    inline, where a thread hand-off would cost more than it saves. ``durable`` fsyncs the file; a
    caller that may delete it unread (a rejected child) leaves that to whoever keeps it.
    """
    digest, n_bytes = hashlib.sha256(), 0

    def consume(chunk: bytes | memoryview) -> None:
        digest.update(chunk)
        f.write(chunk)

    with path.open("wb") as f, contextlib.ExitStack() as stack:
        writer, previous = None, None
        for chunk in chunks:
            if previous is not None:
                previous.result()  # at most one chunk waits: memory stays at one extra tensor
                previous = None
            if len(chunk) < OVERLAP_BYTES:
                consume(chunk)
            else:
                writer = writer or stack.enter_context(ThreadPoolExecutor(max_workers=1))
                previous = writer.submit(consume, chunk)
            n_bytes += len(chunk)
        if previous is not None:
            previous.result()
        f.flush()
        if durable:
            os.fsync(f.fileno())
    return digest.hexdigest(), n_bytes


def publish(tmp: Path, dest: Path, mode: int) -> None:
    """Move a finished, fsynced temporary file to ``dest`` so that a crash leaves either nothing or all of it."""
    os.chmod(tmp, mode)
    os.replace(tmp, dest)
    fsync_path(dest.parent)  # the rename itself must survive a crash


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> tuple[str, int]:
    """Hex sha256 and size of a file, streamed: the content address the artifact store files it under."""
    digest, n_bytes = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
            n_bytes += len(chunk)
    return digest.hexdigest(), n_bytes


def fsync_path(path: Path) -> None:
    """Make a file's bytes, or the renames inside a directory, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_tensors(source: TensorSource, space: ParamSpace) -> Iterator[tuple[str, torch.Tensor]]:
    """A source's tensors in ``space`` order."""
    for spec in space:
        yield spec.name, source.get(spec.name)


def load_state_dict(source: TensorSource) -> dict[str, torch.Tensor]:
    """Every tensor of a source, in memory (for models small enough to hold)."""
    return dict(iter_tensors(source, source.space))
