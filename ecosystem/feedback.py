"""Feedback from files: labelled points in JSON lines, checked line by line, stored all or nothing."""

import json
import os
from pathlib import Path
from typing import Any

from ecosystem.errors import InvalidInput
from ecosystem.orm import DataPoint
from ecosystem.runtime import Runtime
from ecosystem.tasks import add_feedback


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
    """Add every point of a JSON-lines file to a task, or none: returns (added, duplicates) as ``add_points``."""
    lines = read_jsonl(path)
    numbers = [number for number, _ in lines]
    return add_feedback(runtime, task_name, [point for _, point in lines], where=lambda i: f"{path} line {numbers[i]}")
