"""Immutable, content-addressed safetensors files: ``<root>/artifacts/<sha[:2]>/<sha>.safetensors``.

Every file is written under ``<root>/tmp`` first, fsynced, then renamed into place, so a reader never sees
a partial file. Only safetensors headers are ever parsed; nothing is unpickled.
"""

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ecosystem.errors import InvalidInput
from m2n2.checkpoint import fsync_dir, read_header, safetensors_chunks
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
        fd, tmp = self._temp()
        try:
            digest, n_bytes = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, open(src, "rb") as source:
                while chunk := source.read(CHUNK_BYTES):
                    n_bytes += len(chunk)
                    if max_bytes is not None and n_bytes > max_bytes:
                        raise InvalidInput(f"{Path(src).name} is larger than the {max_bytes}-byte limit")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            read_header(tmp)  # the copy, not the source: what is checked is what is stored
            return self._commit(tmp, digest.hexdigest(), n_bytes)
        finally:
            tmp.unlink(missing_ok=True)

    def write_tensors(
        self,
        space: ParamSpace,
        tensors: Iterable[tuple[str, torch.Tensor]],
        metadata: Mapping[str, str] | None = None,
    ) -> Artifact:
        """Stream tensors (in ``space`` order) into a new safetensors artifact.

        The bytes are hashed as they are written, so the file is neither read back nor renamed twice: the
        evolver writes every surviving child this way.
        """
        fd, tmp = self._temp()
        try:
            digest, n_bytes = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                for chunk in safetensors_chunks(space, tensors, metadata):
                    digest.update(chunk)
                    n_bytes += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._commit(tmp, digest.hexdigest(), n_bytes)
        finally:
            tmp.unlink(missing_ok=True)

    def verify(self, sha256: str) -> bool:
        """Re-hash the stored file: False when it is missing or its bytes no longer match its name."""
        path = self.path_for(sha256)
        return path.is_file() and _hash_file(path)[0] == sha256

    def remove(self, sha256: str) -> bool:
        """Delete an artifact; False when there was none."""
        path = self.path_for(sha256)
        if not path.is_file():
            return False
        path.unlink()
        fsync_dir(path.parent)
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

    def _temp(self) -> tuple[int, Path]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="artifact-", suffix=".part")
        return fd, Path(name)

    def _commit(self, tmp: Path, sha256: str, n_bytes: int) -> Artifact:
        dest = self.path_for(sha256)
        if dest.is_file():
            return Artifact(sha256, dest, dest.stat().st_size, created=False)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(dest.parent.parent)
        os.chmod(tmp, 0o444)  # read-only: a file named by its hash never changes
        os.replace(tmp, dest)
        fsync_dir(dest.parent)  # the rename itself must survive a crash
        return Artifact(sha256, dest, n_bytes, created=True)


def _hash_file(path: Path) -> tuple[str, int]:
    digest, n_bytes = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            n_bytes += len(chunk)
    return digest.hexdigest(), n_bytes
