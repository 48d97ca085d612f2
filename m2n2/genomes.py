"""How children are made and stored: one flat tensor, or a model streamed tensor by tensor.

The evolution loop only ever calls ``child()`` and ``release()``, so the same loop
runs the 19k-parameter digits MLP as one vector and a 7B model as safetensors files.
"""

import itertools
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from m2n2.checkpoint import SafetensorsSource, StateDictSource, TensorSource, iter_tensors, write_safetensors
from m2n2.crossover import (
    chromosome_cosines,
    chromosome_slerp_tensors,
    global_cosine,
    mutate_tensors,
    split_range,
    split_slerp,
    split_slerp_tensors,
)
from m2n2.space import ChromosomeSpace, ParamSpace


class Genomes(Protocol):
    """Makes a child from parents; ``parent_b=None`` means mutation of ``parent_a`` only."""

    dim: int

    def child(
        self,
        parent_a: Any,
        parent_b: Any | None,
        mixing_ratio: float,
        split_point: int,
        mutation_std: float,
        generator: torch.Generator,
    ) -> Any: ...

    def release(self, genome: Any) -> None: ...


class FlatGenomes:
    """Genomes are flat float tensors of shape (dim,): the fast path for small models."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def child(self, parent_a, parent_b, mixing_ratio, split_point, mutation_std, generator):
        child = parent_a.clone() if parent_b is None else split_slerp(parent_a, parent_b, mixing_ratio, split_point)
        if mutation_std > 0:
            child.add_(torch.randn(self.dim, generator=generator, dtype=child.dtype), alpha=mutation_std)
        return child

    def release(self, genome: torch.Tensor) -> None:
        """Nothing to free: the tensor is garbage-collected."""


class LazyGenomes:
    """Genomes are tensor sources; children are streamed into safetensors files in ``out_dir``.

    Without ``out_dir`` children are kept in memory as state dicts. Files this class
    wrote are deleted when the loop releases the child; files it was given never are.
    A ``ChromosomeSpace`` crosses each chromosome over on its own (``dim`` is then the range
    the loop draws split points from, which encodes one split point per chromosome).
    """

    def __init__(self, space: ParamSpace, out_dir: str | os.PathLike | None = None) -> None:
        self.space = space
        self.dim = split_range(space)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._written: set[Path] = set()
        # cos(Omega) of every pair merged so far, while both genomes live: archive members are paired again
        # and again, and a known angle saves a whole read of both parents. Same inputs, same float: a merge
        # with a remembered angle is bit-identical to one that measures it.
        self._angles: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, Any]] = weakref.WeakKeyDictionary()

    def child(self, parent_a, parent_b, mixing_ratio, split_point, mutation_std, generator) -> TensorSource:
        for parent in (parent_a, parent_b):
            if parent is not None:
                self.space.check_compatible(parent.space, "parent")
        if parent_b is None:
            tensors = iter_tensors(parent_a, self.space)
        elif isinstance(self.space, ChromosomeSpace):
            cos = self._angle(parent_a, parent_b)
            tensors = chromosome_slerp_tensors(parent_a, parent_b, self.space, mixing_ratio, split_point, cos)
        else:
            cos = self._angle(parent_a, parent_b)
            tensors = split_slerp_tensors(parent_a, parent_b, self.space, mixing_ratio, split_point, cos)
        if mutation_std > 0:
            tensors = mutate_tensors(tensors, mutation_std, generator)
        return self._store(tensors)

    def _angle(self, a: TensorSource, b: TensorSource) -> Any:
        """The pair's cos(Omega) (a tuple of them, one per chromosome), measured on first use (either order)."""
        known = self._angles.get(a, {}).get(b)
        if known is None:
            if isinstance(self.space, ChromosomeSpace):
                known = chromosome_cosines(a, b, self.space)
            else:
                known = global_cosine(a, b, self.space)
            self._angles.setdefault(a, weakref.WeakKeyDictionary())[b] = known
            self._angles.setdefault(b, weakref.WeakKeyDictionary())[a] = known
        return known

    def _store(self, tensors: Iterator[tuple[str, torch.Tensor]]) -> TensorSource:
        """Where a child's streamed tensors go: a file in ``out_dir`` (remembered, to delete on release) or memory."""
        if self.out_dir is None:
            return StateDictSource(dict(tensors))
        path = self.out_dir / f"child-{os.getpid()}-{next(self._counter):08d}.safetensors"
        write_safetensors(path, self.space, tensors)
        self._written.add(path)
        return SafetensorsSource(path)

    def release(self, genome: TensorSource) -> None:
        """Delete the child's file if this object wrote it."""
        path = getattr(genome, "path", None)
        if path in self._written:
            self._written.discard(path)
            if hasattr(genome, "close"):
                genome.close()
            path.unlink(missing_ok=True)
