"""What identifies a data point and which pool it joins: pure functions, no database."""

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from ecosystem.errors import InvalidInput
from ecosystem.orm import POOLS

POINT_KEYS = frozenset({"inputs", "target", "weight", "pool"})


def canonical_json(value: Any, what: str = "value") -> str:
    """``value`` as canonical JSON (sorted keys, no spaces); raises ``InvalidInput`` if it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} is not JSON: {e}") from None


def content_hash(task_name: str, inputs: Any, target: Any) -> str:
    """The identity of a data point: sha256 of the task name, a newline, and canonical JSON of inputs and target."""
    body = canonical_json({"inputs": inputs, "target": target}, what="point")
    return hashlib.sha256(f"{task_name}\n{body}".encode()).hexdigest()


def assign_pool(point_hash: str, gate_share: float) -> str:
    """The pool of a point that names none: ``gate`` when its hash's first 32 bits fall below ``gate_share``."""
    return "gate" if int(point_hash[:8], 16) / 2**32 < gate_share else "fitness"


def check_point(task_name: str, gate_share: float, i: int, point: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate point #i of a batch; returns its content hash and its column values (pool assigned)."""
    if not isinstance(point, Mapping):
        raise InvalidInput(f"point #{i} is a {type(point).__name__}, expected an object with inputs and target")
    if unknown := set(point) - POINT_KEYS:
        raise InvalidInput(f"point #{i} has unknown keys {sorted(unknown)}; allowed: {sorted(POINT_KEYS)}")
    if point.get("inputs") is None or "target" not in point:
        raise InvalidInput(f"point #{i} needs 'inputs' (not null) and 'target'")
    weight, pool = point.get("weight", 1.0), point.get("pool")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not (math.isfinite(weight) and weight > 0):
        raise InvalidInput(f"point #{i}: weight {weight!r} must be a finite number > 0")
    if pool is not None and pool not in POOLS:
        raise InvalidInput(f"point #{i}: pool {pool!r} must be one of {', '.join(POOLS)} (or omitted)")
    try:
        point_hash = content_hash(task_name, point["inputs"], point["target"])
    except InvalidInput as e:
        raise InvalidInput(f"point #{i}: {e}") from None
    pool = pool or assign_pool(point_hash, gate_share)
    return point_hash, {"inputs": point["inputs"], "target": point["target"], "weight": float(weight), "pool": pool}
