"""Per-point scores: the fitness window and the gate set, scored once per model and point.

A model's score on a point is computed the first time it is needed and stored; later
ticks read it back, so archive members are scored only on points they have not seen.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy.orm import Session

from ecosystem import store
from ecosystem.families import Family, FlatScoring
from ecosystem.orm import DataPoint, Model, Task
from ecosystem.runtime import Runtime
from m2n2.space import ParamSpace

FlatEvaluator = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PointSet:
    """Points of several tasks scored as one vector, task after task."""

    parts: tuple[tuple[Task, tuple[DataPoint, ...]], ...]

    @property
    def point_ids(self) -> list[int]:
        return [p.id for _, points in self.parts for p in points]

    def task_slices(self) -> dict[str, slice]:
        """Where each task's points lie in the score vector."""
        slices, start = {}, 0
        for task, points in self.parts:
            slices[task.name] = slice(start, start + len(points))
            start += len(points)
        return slices

    def only(self, point_ids: set[int]) -> "PointSet":
        """The subset of points whose ids are in ``point_ids``, in the same order."""
        return PointSet(tuple((t, tuple(p for p in pts if p.id in point_ids)) for t, pts in self.parts))

    def __len__(self) -> int:
        return sum(len(points) for _, points in self.parts)


def fitness_set(session: Session) -> PointSet:
    """What evolution optimises: the newest ``window`` fitness points of every task."""
    return PointSet(tuple((t, tuple(store.fitness_window(session, t))) for t in store.list_tasks(session)))


def gate_set(session: Session) -> PointSet:
    """What promotion is decided on: every task's gate points."""
    return PointSet(tuple((t, tuple(store.gate_points(session, t))) for t in store.list_tasks(session)))


def evaluator(family: Family, config: dict[str, Any], space: ParamSpace, points: PointSet) -> FlatEvaluator:
    """Scores of a flat parameter vector on ``points``, shape (len(points),)."""
    scorers: list[FlatEvaluator] = []
    for task, pts in points.parts:
        if not pts:
            continue
        inputs, targets = [p.inputs for p in pts], [p.target for p in pts]
        if isinstance(family, FlatScoring):
            scorers.append(family.flat_scorer(config, inputs, targets, task.scoring))
        else:

            def score(flat: torch.Tensor, inputs=inputs, targets=targets, rule=task.scoring) -> torch.Tensor:
                module = family.build(config, space.unflatten(flat))
                return family.score(module, inputs, targets, rule)

            scorers.append(score)
    return lambda flat: torch.cat([s(flat) for s in scorers]) if scorers else torch.zeros(0)


def model_scores(
    session: Session,
    runtime: Runtime,
    model: Model,
    points: PointSet,
    flat: torch.Tensor | None = None,
    evaluate: FlatEvaluator | None = None,
) -> torch.Tensor:
    """A stored model's scores on ``points`` (shape (len(points),)), scoring and storing only missing ones.

    ``flat`` is the model's weights when the caller holds them (else they are read from its artifact);
    ``evaluate`` an ``evaluator`` of all of ``points``, used when the model has no score on any of them, so
    a caller that checks many models on the same points builds it once.
    """
    ids = points.point_ids
    cached = store.scores_for(session, [model.id], ids)
    missing = {p for p in ids if (model.id, p) not in cached}
    if missing:
        family, config, space = runtime.family(session)
        subset = points if len(missing) == len(ids) else points.only(missing)
        if evaluate is None or subset is not points:
            evaluate = evaluator(family, config, space, subset)
        if flat is None:
            flat = runtime.flat(model, space)
        fresh = dict(zip(subset.point_ids, evaluate(flat).tolist(), strict=True))
        store.add_scores(session, model.id, fresh)
        cached.update(((model.id, p), s) for p, s in fresh.items())
    return torch.tensor([cached[(model.id, p)] for p in ids], dtype=torch.float32)
