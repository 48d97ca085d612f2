"""Per-point scores: the fitness window and the gate set, scored once per model and point, by one evaluator.

A model's score on a point is computed the first time it is needed and stored; later
ticks read it back, so archive members are scored only on points they have not seen.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from sqlalchemy.orm import Session

from ecosystem import store
from ecosystem.families import Family, FlatScoring
from ecosystem.genome_store import genome_store
from ecosystem.orm import DataPoint, Model, Task
from ecosystem.runtime import Runtime
from m2n2 import Archive


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


class Evaluator(Protocol):
    """Scores genomes on one point set: one interface, so a distributed evaluator can replace this process's."""

    def __call__(self, genome: Any) -> torch.Tensor:
        """Scores of one genome, shape (n_points,)."""
        ...

    def evaluate(self, genomes: Sequence[Any]) -> list[torch.Tensor]:
        """Scores of several genomes, in order."""
        ...


TaskData = list[tuple[str, list[Any], list[Any]]]  # (scoring rule, inputs, targets) of each task with points


def task_data(points: PointSet) -> TaskData:
    """What scoring ``points`` needs, free of database rows: it travels to remote evaluators as is."""
    return [(task.scoring, [p.inputs for p in pts], [p.target for p in pts]) for task, pts in points.parts if pts]


class InProcessEvaluator:
    """Scores genomes in this process: flat vectors through the family's fast path, files by building a module.

    ``points`` is a ``PointSet`` or its ``task_data`` (how a remote evaluator receives it).
    """

    def __init__(
        self, family: Family, config: dict[str, Any], points: PointSet | TaskData, device: str = "cpu"
    ) -> None:
        self.family, self.config, self.points, self.device = family, config, points, device
        self._tasks = task_data(points) if isinstance(points, PointSet) else points
        self._flat = (
            [family.flat_scorer(config, inputs, targets, rule) for rule, inputs, targets in self._tasks]
            if isinstance(family, FlatScoring)
            else None
        )

    def __call__(self, genome: Any) -> torch.Tensor:
        if not self._tasks:
            return torch.zeros(0)
        if self._flat is not None:
            return torch.cat([score(genome) for score in self._flat])
        module = self.family.build(self.config, genome, self.device)  # one model in memory per evaluation
        try:
            parts = [
                self.family.score(module, self.config, inputs, targets, rule) for rule, inputs, targets in self._tasks
            ]
        finally:
            del module
        return torch.cat([p.float().cpu() for p in parts])

    def evaluate(self, genomes: Sequence[Any]) -> list[torch.Tensor]:
        return [self(genome) for genome in genomes]


def evaluator(runtime: Runtime, family: Family, config: dict[str, Any], points: PointSet) -> Evaluator:
    """The evaluator of ``points`` that this ecosystem uses (in-process, on the evolution device)."""
    return InProcessEvaluator(family, config, points, runtime.settings.evolution.device)


def model_scores(
    session: Session,
    runtime: Runtime,
    model: Model,
    points: PointSet,
    genome: Any = None,
    evaluate: Evaluator | None = None,
) -> torch.Tensor:
    """A stored model's scores on ``points`` (shape (len(points),)), scoring and storing only missing ones.

    ``genome`` is the model's weights when the caller holds them (else they are read from its artifact);
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
            evaluate = evaluator(runtime, family, config, subset)
        if genome is None:
            genome = genome_store(runtime, family, space).load(model)
        fresh = dict(zip(subset.point_ids, evaluate(genome).tolist(), strict=True))
        store.add_scores(session, model.id, fresh)
        cached.update(((model.id, p), s) for p, s in fresh.items())
    return torch.tensor([cached[(model.id, p)] for p in ids], dtype=torch.float32)


def stored_archive(
    session: Session, runtime: Runtime, points: PointSet, load: Callable[[Model], Any] | None = None
) -> tuple[Archive, dict[int, Model]]:
    """The stored archive scored on ``points``: genomes are ``load(model)`` (default: the model ids)."""
    eco = store.get_ecosystem(session)
    archive = Archive(eco.archive_size, len(points), eco.alpha)
    members = store.archive(session)
    for slot, model in members.items():
        genome = load(model) if load is not None else model.id
        archive.put(slot, genome, model_scores(session, runtime, model, points, None if load is None else genome))
    return archive, members
