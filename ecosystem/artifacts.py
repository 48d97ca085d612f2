"""Immutable, content-addressed safetensors files: ``<root>/artifacts/<sha[:2]>/<sha>.safetensors``.

Every file is written under ``<root>/tmp`` first, fsynced, then renamed into place, so a reader never sees
a partial file. Only safetensors headers are ever parsed; nothing is unpickled.
"""

import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ecosystem.errors import InvalidInput
from m2n2.checkpoint import fsync_path, publish, read_header, safetensors_chunks, sha256_file, write_chunks
from m2n2.space import ParamSpace

CHUNK_BYTES = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Artifact:
    """A stored file: its hash, where it lies, its size, and whether this call stored it."""

    sha256: str
    path: Path
    n_bytes: int
    created: bool


class ArtifactStore:
    """Content-addressed weights under one root directory (the ecosystem's data directory)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path_for(self, sha256: str) -> Path:
        """Where the artifact with this hash lives (whether or not it exists)."""
        if not _SHA256.fullmatch(sha256):
            raise InvalidInput(f"{sha256!r} is not a sha256 hash (64 lowercase hex digits)")
        return self.artifacts_dir / sha256[:2] / f"{sha256}.safetensors"

    def exists(self, sha256: str) -> bool:
        """Whether the artifact is stored."""
        return self.path_for(sha256).is_file()

    def put_file(self, src: str | os.PathLike, max_bytes: int | None = None) -> Artifact:
        """Copy a safetensors file into the store, hashing while copying.

        Raises ``InvalidInput`` past ``max_bytes`` (checked while copying) and ``m2n2.InvalidCheckpoint``
        when the copy is not a well-formed safetensors file.
        """
        tmp = self._temp()
        try:
            sha256, n_bytes = write_chunks(tmp, _read_chunks(Path(src), max_bytes), durable=False)
            read_header(tmp)  # the copy, not the source: what is checked is what is stored
            return self.adopt(tmp, sha256, n_bytes)
        finally:
            tmp.unlink(missing_ok=True)

    def write_tensors(
        self,
        space: ParamSpace,
        tensors: Iterable[tuple[str, torch.Tensor]],
        metadata: Mapping[str, str] | None = None,
    ) -> Artifact:
        """Stream tensors (in ``space`` order) into a new safetensors artifact, hashed as they are written."""
        pending = self.write_pending(space, tensors, metadata)
        try:
            return self.adopt(pending.path, pending.sha256, pending.n_bytes)
        finally:
            pending.path.unlink(missing_ok=True)

    def write_pending(
        self,
        space: ParamSpace,
        tensors: Iterable[tuple[str, torch.Tensor]],
        metadata: Mapping[str, str] | None = None,
    ) -> Artifact:
        """Stream tensors into a file under ``tmp`` that ``adopt`` can later make durable and move into the store.

        The evolver writes every child this way: a rejected child's file is deleted, an admitted one is
        renamed into place, never copied.
        """
        tmp = self._temp()
        try:
            sha256, n_bytes = write_chunks(tmp, safetensors_chunks(space, tensors, metadata), durable=False)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Artifact(sha256, tmp, n_bytes, created=False)

    def adopt(self, tmp: Path, sha256: str, n_bytes: int) -> Artifact:
        """Make a finished file under ``tmp`` durable and move it to its content address."""
        dest = self.path_for(sha256)
        if dest.is_file():
            return Artifact(sha256, dest, dest.stat().st_size, created=False)
        fsync_path(tmp)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsync_path(dest.parent.parent)
        publish(tmp, dest, 0o444)  # read-only: a file named by its hash never changes
        return Artifact(sha256, dest, n_bytes, created=True)

    def verify(self, sha256: str) -> bool:
        """Re-hash the stored file: False when it is missing or its bytes no longer match its name."""
        path = self.path_for(sha256)
        return path.is_file() and sha256_file(path)[0] == sha256

    def remove(self, sha256: str, durable: bool = True) -> bool:
        """Delete an artifact; False when there was none.

        ``durable=False`` skips the directory fsync: for clean-ups, where a deletion a crash undoes only
        leaves a file for the next clean-up, and an fsync per file would cost more than the tick's merges.
        """
        path = self.path_for(sha256)
        if not path.is_file():
            return False
        path.unlink()
        if durable:
            fsync_path(path.parent)
        return True

    def clean_tmp(self, older_than_seconds: float = 3600) -> int:
        """Delete temporary files left by crashed writers; returns how many went."""
        if not self.tmp_dir.is_dir():
            return 0
        cutoff, removed = time.time() - older_than_seconds, 0
        for path in self.tmp_dir.iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def list_hashes(self) -> set[str]:
        """The hashes of every stored artifact."""
        if not self.artifacts_dir.is_dir():
            return set()
        return {p.name.removesuffix(".safetensors") for p in self.artifacts_dir.glob("??/*.safetensors")}

    def _temp(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="artifact-", suffix=".part")
        os.close(fd)
        return Path(name)


def _read_chunks(src: Path, max_bytes: int | None) -> Iterator[bytes]:
    """A file's bytes, a chunk at a time, refusing it once past ``max_bytes``."""
    n_bytes = 0
    with src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            n_bytes += len(chunk)
            if max_bytes is not None and n_bytes > max_bytes:
                raise InvalidInput(f"{src.name} is larger than the {max_bytes}-byte limit")
            yield chunk
