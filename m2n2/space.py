"""The parameter space: one global index over all of a model's tensors.

M2N2 treats a model as one flat vector in a canonical order (state-dict key order),
so a split point can fall inside any tensor. Large models are never flattened: a
``ParamSpace`` maps the global index onto (tensor, local offset) pairs instead.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from m2n2.errors import IncompatibleModels, ShapeMismatch


@dataclass(frozen=True)
class TensorSpec:
    """One tensor's place in the global index: elements [offset, offset + numel)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def end(self) -> int:
        return self.offset + self.numel


class ParamSpace:
    """Names, shapes and dtypes of a model's tensors, in canonical order."""

    def __init__(self, tensors: Sequence[tuple[str, Sequence[int], torch.dtype]]) -> None:
        specs, offset = [], 0
        for name, shape, dtype in tensors:
            spec = TensorSpec(name, tuple(int(d) for d in shape), dtype, offset)
            specs.append(spec)
            offset = spec.end
        if len({s.name for s in specs}) != len(specs):
            raise IncompatibleModels("duplicate tensor names in parameter space")
        self.specs: tuple[TensorSpec, ...] = tuple(specs)
        self.dim = offset
        self._by_name = {s.name: s for s in specs}

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "ParamSpace":
        """The space of a state dict, in its key order."""
        return cls([(k, tuple(v.shape), v.dtype) for k, v in state_dict.items()])

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def __iter__(self) -> Iterator[TensorSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, name: str) -> TensorSpec:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpace) and self.signature() == other.signature()

    def __hash__(self) -> int:
        return hash(self.signature())

    def signature(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Names and shapes in order: what two models must share to be merged."""
        return tuple((s.name, s.shape) for s in self.specs)

    def check_compatible(self, other: "ParamSpace", what: str = "model") -> None:
        """Raise ``IncompatibleModels`` naming the first tensor (in this space's order) that differs.

        Order is not compared: files written by other tools lay tensors out by dtype and
        name, and this space's order is the canonical one.
        """
        for mine in self.specs:
            if mine.name not in other:
                raise IncompatibleModels(f"{what} is missing tensor {mine.name!r}")
            theirs = other[mine.name]
            if mine.shape != theirs.shape:
                raise IncompatibleModels(
                    f"{what}: tensor {mine.name!r} has shape {list(theirs.shape)}, expected {list(mine.shape)}"
                )
        for theirs in other.specs:
            if theirs.name not in self:
                raise IncompatibleModels(f"{what} has unexpected tensor {theirs.name!r}")

    def flatten(self, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Concatenate a state dict into one vector of shape (dim,). Only for small models."""
        self.check_compatible(ParamSpace.from_state_dict(state_dict))
        flat = torch.empty(self.dim, dtype=dtype)
        for spec in self.specs:
            flat[spec.offset : spec.end] = state_dict[spec.name].reshape(-1)
        return flat

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a flat vector shaped as the state dict (cast where dtypes differ)."""
        if flat.shape != (self.dim,):
            raise ShapeMismatch(f"flat vector has shape {list(flat.shape)}, expected [{self.dim}]")
        return {s.name: flat[s.offset : s.end].view(s.shape).to(s.dtype) for s in self.specs}


class ChromosomeSpace(ParamSpace):
    """A space divided into chromosomes, each crossed over with its own split point and mixing ratio.

    The paper evolves a diffusion UNet's attention parameters as a chromosome of their own. ``groups``
    gives each tensor's chromosome (0, 1, ...); a tensor's place in its chromosome counts only the
    elements of earlier tensors of the same chromosome, in this space's order.
    """

    def __init__(self, tensors: Sequence[tuple[str, Sequence[int], torch.dtype]], groups: Sequence[int]) -> None:
        super().__init__(tensors)
        if len(groups) != len(self.specs):
            raise IncompatibleModels(f"{len(groups)} chromosome groups for {len(self.specs)} tensors")
        n = max(groups, default=-1) + 1
        sizes = [0] * n
        self.place: dict[str, tuple[int, int]] = {}  # tensor name -> (chromosome, offset inside it)
        for spec, group in zip(self.specs, groups, strict=True):
            self.place[spec.name] = (group, sizes[group])
            sizes[group] += spec.numel
        if 0 in sizes:
            raise IncompatibleModels(f"chromosome {sizes.index(0)} holds no parameters")
        self.sizes: tuple[int, ...] = tuple(sizes)
