"""Merge whole models with a registered classic method, one tensor at a time.

The per-tensor functions live in ``m2n2.methods``; this module checks the inputs once,
then streams: at most one tensor of each input is held at a time, and with ``out`` the
merged model goes straight into a safetensors file.
"""

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from m2n2.checkpoint import SafetensorsSource, StateDictSource, TensorSource, write_safetensors
from m2n2.errors import M2N2Error
from m2n2.methods import MergeMethod, get_method
from m2n2.space import ParamSpace


def merge(
    models: Sequence[TensorSource],
    method: str = "linear",
    base: TensorSource | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    **params: Any,
) -> TensorSource:
    """Merge ``models`` with ``method``; write to ``out`` (safetensors) if given, else keep in memory."""
    spec = get_method(method)
    if not models:
        raise M2N2Error(f"merge method {method!r} needs at least one model")
    space = models[0].space
    for i, model in enumerate(models[1:], start=1):
        space.check_compatible(model.space, f"model #{i}")
    if spec.needs_base and base is None:
        raise M2N2Error(f"merge method {method!r} needs a base model (pass base=...)")
    if base is not None and not spec.needs_base:
        # Silently ignoring it would hide a mistake: mergekit's slerp, say, uses the base as an endpoint.
        raise M2N2Error(f"merge method {method!r} does not use a base model; drop base=...")
    if base is not None:
        space.check_compatible(base.space, "base model")
    kwargs = spec.bind(params)
    # One generator for the whole merge, consumed in space order, so a seed fixes every DARE mask.
    generator = torch.Generator().manual_seed(seed)
    tensors = _merged_tensors(spec, models, base, space, generator, kwargs)
    if out is None:
        return StateDictSource(dict(tensors))
    # format=pt: transformers refuses safetensors files whose metadata lacks it.
    metadata = {"format": "pt", "merge_method": method, "merge_params": json.dumps(kwargs), "seed": str(seed)}
    return SafetensorsSource(write_safetensors(out, space, tensors, metadata))


def _merged_tensors(
    spec: MergeMethod,
    models: Sequence[TensorSource],
    base: TensorSource | None,
    space: ParamSpace,
    generator: torch.Generator,
    kwargs: dict[str, Any],
) -> Iterator[tuple[str, torch.Tensor]]:
    for t in space:
        if not t.dtype.is_floating_point:
            # Integer and bool tensors are indices, counters or masks, not weights: averaging them
            # is meaningless (and float32 is inexact past 2**24), so take the base's, else model #0's.
            source = base if base is not None else models[0]
            yield t.name, source.get(t.name).to(t.dtype)
            continue
        inputs = [m.get(t.name).float() for m in models]
        reference = base.get(t.name).float() if base is not None else None
        merged = spec.fn(inputs, reference, generator=generator, **kwargs)
        yield t.name, merged.to(t.dtype)
