"""The smoke inference every champion passes before it is served: the family's smoke input, finite answers.

Workers run it on every model they swap in; a champion move runs it first too, so the store never
names a champion that no worker would serve.
"""

import math
from collections.abc import Iterator
from typing import Any

import torch

from ecosystem.errors import InvalidInput
from ecosystem.families import Family
from ecosystem.orm import Model
from ecosystem.runtime import Runtime


class SmokeTestFailed(InvalidInput):
    """A model gave no answer, or a non-finite one, for its family's smoke input."""


def smoke_test(family: Family, config: dict[str, Any], module: torch.nn.Module, name: str) -> None:
    """Raise ``SmokeTestFailed`` unless the module answers the family's smoke input with finite numbers."""
    if not finite(family.predict(module, config, family.smoke_inputs(config))):
        raise SmokeTestFailed(f"model {name!r} gives a non-finite answer to the smoke input; it cannot be served")


def check_serves(runtime: Runtime, model: Model, device: str = "cpu") -> None:
    """Build a stored model as a worker would and smoke-test it."""
    with runtime.sessions() as session:
        family, config, _ = runtime.family(session)
    with runtime.source(model) as source:
        module = family.build(config, source, device)
    smoke_test(family, config, module, model.name)


def finite(outputs: list[dict[str, Any]]) -> bool:
    """There are outputs, and every number in them is finite."""
    return bool(outputs) and all(math.isfinite(x) for x in _numbers(outputs))


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float):
        yield value
