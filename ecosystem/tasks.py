"""Tasks and their feedback: the operations the CLI and the HTTP service share."""

from collections.abc import Callable
from typing import Any

from ecosystem import metrics, store
from ecosystem.db import begin_write
from ecosystem.errors import InvalidInput
from ecosystem.orm import DataPoint, Task
from ecosystem.points import check_point
from ecosystem.runtime import Runtime


def create_task(
    runtime: Runtime, *, name: str, scoring: str, window: int | None = None, gate_share: float | None = None
) -> Task:
    """Create a task whose scoring rule is one of the ecosystem family's (unset options keep the store's defaults)."""
    options = {k: v for k, v in (("window", window), ("gate_share", gate_share)) if v is not None}
    with runtime.sessions() as session:
        begin_write(session)
        family, _, _ = runtime.family(session)
        if scoring not in family.scoring_rules:
            rules = ", ".join(family.scoring_rules)
            raise InvalidInput(f"scoring rule {scoring!r} is not one of the {family.name} family's: {rules}")
        task = store.create_task(session, name=name, scoring=scoring, **options)
        session.commit()
        session.refresh(task)
        session.expunge(task)
    return task


def add_feedback(
    runtime: Runtime, task_name: str, points: list[Any], where: Callable[[int], str] = lambda i: f"points[{i}]"
) -> tuple[list[DataPoint], list[DataPoint]]:
    """Add labelled points to a task, all or none: returns (added, duplicates) as ``add_points``.

    Each point is ``{"inputs": ..., "target": ..., "weight"?: > 0, "pool"?: "fitness" | "gate"}``,
    checked against the family's ``validate_point`` before anything is written; ``where(i)``
    names point ``i`` in error messages.
    """
    with runtime.sessions() as session:
        begin_write(session)
        task = store.get_task(session, task_name)
        family, config, _ = runtime.family(session)
        for i, point in enumerate(points):
            try:
                check_point(task.name, task.gate_share, i, point)  # keys, weight and pool
                family.validate_point(config, point["inputs"], point["target"])
            except (InvalidInput, ValueError) as e:
                raise InvalidInput(f"{where(i)}: {e}") from None
        added, duplicates = store.add_points(session, task, points)
        session.commit()
    for point in added:
        metrics.FEEDBACK_POINTS.labels(task.name, point.pool).inc()
    return added, duplicates
