"""Feedback from files: labelled points in JSON lines, checked line by line, stored all or nothing."""

import json
import os
from pathlib import Path
from typing import Any

from ecosystem import metrics, store
from ecosystem.db import begin_write
from ecosystem.errors import InvalidInput
from ecosystem.orm import DataPoint
from ecosystem.points import check_point
from ecosystem.runtime import Runtime


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; ``InvalidInput`` names the first bad line."""
    path, lines = Path(path), []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    lines.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise InvalidInput(f"{path} line {number}: not JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text; expected one JSON object per line") from None
    if not lines:
        raise InvalidInput(f"{path} holds no points; expected one JSON object per line")
    return lines


def import_jsonl(runtime: Runtime, task_name: str, path: str | os.PathLike) -> tuple[list[DataPoint], list[DataPoint]]:
    """Add every point of a JSON-lines file to a task, or none: returns (added, duplicates) as ``add_points``.

    Each line is ``{"inputs": ..., "target": ..., "weight"?: > 0, "pool"?: "fitness" | "gate"}``,
    checked against the family's ``validate_point`` before anything is written.
    """
    lines = read_jsonl(path)
    with runtime.sessions() as session:
        begin_write(session)
        task = store.get_task(session, task_name)
        family, config, _ = runtime.family(session)
        for number, point in lines:
            try:
                check_point(task.name, task.gate_share, number, point)  # keys, weight and pool
                family.validate_point(config, point["inputs"], point["target"])
            except (InvalidInput, ValueError) as e:
                raise InvalidInput(f"{path} line {number}: {e}") from None
        added, duplicates = store.add_points(session, task, [point for _, point in lines])
        session.commit()
    for point in added:
        metrics.FEEDBACK_POINTS.labels(task.name, point.pool).inc()
    return added, duplicates
