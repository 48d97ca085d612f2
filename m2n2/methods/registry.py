"""The registry of classic merge methods (mergekit's operators), one per-tensor function each.

A method is a pure function ``fn(tensors, base, *, generator, **params) -> Tensor``. Its
keyword-only parameters with their defaults and type hints are its schema, as with
mergekit's ``@merge_method``: everything else (accepted parameters, docs, API enums) is
derived from the entries here rather than listed a second time.
"""

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from m2n2.errors import DuplicateMergeMethod, InvalidMergeParameter, UnknownMergeMethod

MergeFn = Callable[..., torch.Tensor]

# Positional arguments every method takes, and names a method parameter may not use:
# ``merge(models, method, base, out, seed, **params)`` forwards **params, so a method
# parameter with one of these names could never be set.
_POSITIONAL = ("tensors", "base")
_RESERVED = frozenset({"models", "method", "base", "out", "seed", "generator", "tensors"})

_METHODS: dict[str, "MergeMethod"] = {}


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: its per-tensor function and what it declares."""

    name: str
    fn: MergeFn
    params: tuple[inspect.Parameter, ...]  # keyword-only, each with a default and annotation
    needs_base: bool
    reference_url: str
    description: str

    @property
    def defaults(self) -> dict[str, Any]:
        """Each declared parameter's default value."""
        return {p.name: p.default for p in self.params}

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``params``; raises ``InvalidMergeParameter`` on an unknown name."""
        defaults = self.defaults
        for key in params:
            if key not in defaults:
                accepted = ", ".join(defaults) or "none"
                raise InvalidMergeParameter(
                    f"merge method {self.name!r} has no parameter {key!r}; accepted parameters: {accepted}"
                )
        return {**defaults, **params}

    def __call__(
        self, tensors: list[torch.Tensor], base: torch.Tensor | None, *, generator: torch.Generator, **params: Any
    ) -> torch.Tensor:
        """Merge one tensor (in float32) with this method."""
        return self.fn(tensors, base, generator=generator, **self.bind(params))


def _declared_params(name: str, fn: MergeFn) -> tuple[inspect.Parameter, ...]:
    sig = inspect.signature(fn)
    positional = [p.name for p in sig.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = [p for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
    if tuple(positional) != _POSITIONAL or not keyword or keyword[0].name != "generator":
        raise TypeError(f"merge method {name!r} must have the signature fn(tensors, base, *, generator, ...)")
    params = tuple(keyword[1:])
    for p in params:
        if p.default is p.empty:
            raise TypeError(f"merge method {name!r}: parameter {p.name!r} needs a default")
        if p.name in _RESERVED:
            raise TypeError(f"merge method {name!r}: parameter name {p.name!r} is reserved by merge()")
    return params


def merge_method(name: str, reference_url: str, needs_base: bool = False) -> Callable[[MergeFn], MergeFn]:
    """Register a per-tensor merge function under ``name``; raises on a duplicate name."""
    # Registry keys become public API once shipped (STYLE.md), so hold them to snake_case.
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"merge method name {name!r} is not lowercase snake_case")

    def register(fn: MergeFn) -> MergeFn:
        if name in _METHODS:
            raise DuplicateMergeMethod(f"merge method {name!r} is already registered by {_METHODS[name].fn.__module__}")
        doc = inspect.getdoc(fn)
        if not doc:
            raise TypeError(f"merge method {name!r} needs a one-line docstring (it is the method's description)")
        _METHODS[name] = MergeMethod(
            name=name,
            fn=fn,
            params=_declared_params(name, fn),
            needs_base=needs_base,
            reference_url=reference_url,
            description=doc.splitlines()[0],
        )
        return fn

    return register


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``; raises ``UnknownMergeMethod`` listing the others."""
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMergeMethod(name, available_methods()) from None


def available_methods() -> list[str]:
    """Names of all registered merge methods, sorted."""
    return sorted(_METHODS)


# Every built-in, imported explicitly: a method exists as soon as the registry does,
# whatever else was or was not imported (mergekit relies on import side effects instead).
from m2n2.methods import dare, linear, slerp, task_arithmetic, ties  # noqa: E402, F401
