"""How the evolver holds models: flat vectors in memory, or safetensors files streamed tensor by tensor.

A family with the ``FlatScoring`` fast path (the classifier) evolves on flat float32 vectors,
as the library's digits loop does. Every other family evolves lazily: a child is streamed from
its parents into a file under the artifact store's ``tmp`` directory, scored from that file,
deleted when rejected and renamed (never copied) to its content address when it survives. Both
kinds answer the same four questions, so the evolver, the gate and registration never ask which
one they hold.
"""

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from ecosystem import metrics
from ecosystem.artifacts import Artifact, ArtifactStore
from ecosystem.families import Family, FlatScoring
from ecosystem.orm import Model
from ecosystem.runtime import Runtime
from m2n2.checkpoint import SafetensorsSource, TensorSource, iter_tensors, safetensors_digest
from m2n2.genomes import FlatGenomes, Genomes, LazyGenomes
from m2n2.space import ParamSpace


class GenomeStore(Protocol):
    """The genomes of one ecosystem: how to load, make, hash and keep them."""

    genomes: Genomes  # what the M2N2 loop calls to make and release children

    def load(self, model: Model) -> Any:
        """A stored model as a genome."""
        ...

    def digest(self, genome: Any) -> tuple[str, int]:
        """The sha256 and size of the genome's safetensors file (its content address)."""
        ...

    def persist(self, genome: Any) -> Artifact:
        """Make the genome a durable artifact (before any store row points at it)."""
        ...

    def tensors(self, genome: Any) -> Iterator[tuple[str, torch.Tensor]]:
        """The genome's tensors in space order, one at a time."""
        ...

    def drop_pending(self) -> None:
        """Delete what this tick wrote and did not persist (genomes already open stay readable)."""
        ...


def genome_store(runtime: Runtime, family: Family, space: ParamSpace) -> GenomeStore:
    """Flat members for families with the fast path, files for the rest."""
    if isinstance(family, FlatScoring):
        return FlatGenomeStore(runtime, space)
    return FileGenomeStore(runtime, space)


class TimedFlatGenomes(FlatGenomes):
    """Flat genomes whose merges are timed into ``m2n2_merge_duration_seconds``."""

    def child(self, *args, **kwargs) -> torch.Tensor:
        with metrics.MERGE_DURATION.time():
            return super().child(*args, **kwargs)


class FlatGenomeStore:
    """Genomes are flat float32 vectors of shape (dim,); their files are written only when they survive."""

    def __init__(self, runtime: Runtime, space: ParamSpace) -> None:
        self.runtime, self.space = runtime, space
        self.genomes = TimedFlatGenomes(space.dim)

    def load(self, model: Model) -> torch.Tensor:
        return self.runtime.flat(model, self.space)

    def digest(self, genome: torch.Tensor) -> tuple[str, int]:
        return safetensors_digest(self.space, self.tensors(genome))

    def persist(self, genome: torch.Tensor) -> Artifact:
        return self.runtime.artifacts.write_tensors(self.space, self.tensors(genome))

    def tensors(self, genome: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.space.unflatten(genome).items())

    def drop_pending(self) -> None:
        """Nothing was written: unpersisted children are only in memory."""


class ChildFile(SafetensorsSource):
    """A child streamed into a pending artifact file; its hash was taken while it was written."""

    def __init__(self, pending: Artifact) -> None:
        super().__init__(pending.path)
        self.sha256, self.n_bytes = pending.sha256, pending.n_bytes


class ChildFiles(LazyGenomes):
    """Lazy genomes written as pending artifacts (under the store's ``tmp``), so survivors are only renamed."""

    def __init__(self, space: ParamSpace, artifacts: ArtifactStore) -> None:
        super().__init__(space)
        self.artifacts = artifacts

    def child(self, *args, **kwargs) -> TensorSource:
        with metrics.MERGE_DURATION.time():
            return super().child(*args, **kwargs)

    def _store(self, tensors: Iterator[tuple[str, torch.Tensor]]) -> ChildFile:
        child = ChildFile(self.artifacts.write_pending(self.space, tensors, {"format": "pt"}))
        self._written.add(child.path)
        return child

    def keep(self, child: ChildFile) -> Artifact:
        """Move a child's file to its content address; it is the store's now, so releasing it deletes nothing."""
        artifact = self.artifacts.adopt(child.path, child.sha256, child.n_bytes)
        self._written.discard(child.path)
        if artifact.path != child.path:
            child.path.unlink(missing_ok=True)  # the same weights were stored already; the open file still reads
        child.path = artifact.path
        return artifact

    def drop_pending(self) -> None:
        """Unlink every file written and not kept; handles already open still read them."""
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written.clear()


class FileGenomeStore:
    """Genomes are safetensors files read one tensor at a time: models far larger than memory evolve."""

    def __init__(self, runtime: Runtime, space: ParamSpace) -> None:
        self.runtime, self.space = runtime, space
        self.genomes = ChildFiles(space, runtime.artifacts)

    def load(self, model: Model) -> SafetensorsSource:
        return self.runtime.source(model)

    def digest(self, genome: SafetensorsSource) -> tuple[str, int]:
        if isinstance(genome, ChildFile):
            return genome.sha256, genome.n_bytes
        return safetensors_digest(self.space, self.tensors(genome))

    def persist(self, genome: SafetensorsSource) -> Artifact:
        if isinstance(genome, ChildFile) and genome.path.is_file():
            return self.genomes.keep(genome)
        return self.runtime.artifacts.write_tensors(self.space, self.tensors(genome), {"format": "pt"})

    def tensors(self, genome: SafetensorsSource) -> Iterator[tuple[str, torch.Tensor]]:
        return iter_tensors(genome, self.space)

    def drop_pending(self) -> None:
        """Delete child files no slot kept (e.g. a child equal to a stored model)."""
        self.genomes.drop_pending()
