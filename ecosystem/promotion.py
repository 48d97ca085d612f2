"""The promotion gate: the champion changes only when a challenger is better on gate points.

Gate points are never seen by evolution. The comparison is paired, point by point, and
a move of the champion pointer is recorded with its scores and reason in the same
transaction that makes it.
"""

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ecosystem import gate, metrics, scoring, smoke, store, weights
from ecosystem.db import begin_write
from ecosystem.errors import Conflict
from ecosystem.orm import Champion, ChampionEvent, Model
from ecosystem.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the gate decided about one challenger."""

    action: str  # "initial", "promote" or "kept"
    model_id: int
    reason: str


def after_tick(runtime: Runtime, candidate_id: int, actor: str = "evolver") -> Outcome | None:
    """Offer the archive's best member to the gate; None when it already is the champion."""
    return Gatekeeper(runtime, actor).offer(candidate_id)


@dataclass(frozen=True)
class _Gate:
    """The gate points of one check, and an evaluator of all of them (built once per gate set)."""

    point_ids: tuple[int, ...]
    points: scoring.PointSet
    evaluate: scoring.Evaluator


class Gatekeeper:
    """``after_tick`` for a caller that offers candidates again and again: the evolver, after every tick.

    A decision depends only on the candidate, the champion (model and version) and the gate points, since
    a stored score never changes: the same question gets the remembered answer without reading or scoring
    anything. The gate set, with its evaluator, is loaded again only when its points change.
    """

    def __init__(self, runtime: Runtime, actor: str = "evolver") -> None:
        self.runtime = runtime
        self.actor = actor
        self._gate: _Gate | None = None
        self._last: tuple[tuple[int, int, int, tuple[int, ...]], Outcome] | None = None
        self._exported_version: int | None = None  # champion version whose gate scores the gauges hold

    def offer(self, candidate_id: int, genome: Any = None) -> Outcome | None:
        """Let a candidate (``genome``: its weights, when the caller holds them) challenge the champion.

        None when it already is the champion; otherwise the first champion, a promotion or "kept".
        """
        outcome = self._decide(candidate_id, genome)
        self._export_if_moved()
        return outcome

    def _export_if_moved(self) -> None:
        """Export the champion's gate scores when its version moved since the last export, whoever moved it.

        So the evolver's gauge follows promotions and rollbacks made over HTTP or on the command line too.
        """
        with self.runtime.sessions() as session:
            current = store.champion(session)
            if current is not None and current.version != self._exported_version:
                export_champion_scores(session, self.runtime)
                self._exported_version = current.version

    def _decide(self, candidate_id: int, genome: Any) -> Outcome | None:
        with self.runtime.sessions() as session:
            begin_write(session)  # reads, then moves the pointer: hold the SQLite write lock throughout
            candidate = store.get_model(session, candidate_id)
            current = store.champion(session)
            if current is None:
                return self._first_champion(session, candidate)
            if current.model_id == candidate.id:
                return None
            point_ids = tuple(store.gate_point_ids(session))
            key = (candidate.id, current.model_id, current.version, point_ids)
            if self._last is not None and self._last[0] == key:
                return self._last[1]  # nothing the decision depends on has changed
            outcome = self._challenge(session, candidate, current, self._gate_for(session, point_ids), genome)
            self._last = (key, outcome)
            return outcome

    def _first_champion(self, session: Session, candidate: Model) -> Outcome:
        """No champion yet: the candidate becomes the first, without a comparison."""
        store.set_champion(
            session, candidate.id, "initial", self.actor, reason="first champion: the archive's best member"
        )
        session.commit()
        return Outcome("initial", candidate.id, "first champion")

    def _gate_for(self, session: Session, point_ids: tuple[int, ...]) -> _Gate:
        """The gate set with these point ids: the remembered one, or loaded (and an evaluator built) anew."""
        if self._gate is None or self._gate.point_ids != point_ids:
            points = scoring.gate_set(session)
            family, config, _ = self.runtime.family(session)
            evaluate = scoring.evaluator(self.runtime, family, config, points)
            self._gate = _Gate(tuple(points.point_ids), points, evaluate)
        return self._gate

    def _challenge(
        self, session: Session, candidate: Model, current: Champion, gate_set: _Gate, genome: Any
    ) -> Outcome:
        """Score both on the gate points (storing new scores), test the difference, promote if it holds."""
        settings = self.runtime.settings.promotion
        points = gate_set.points
        incumbent = store.get_model(session, current.model_id)
        challenger_scores = scoring.model_scores(session, self.runtime, candidate, points, genome, gate_set.evaluate)
        incumbent_scores = scoring.model_scores(session, self.runtime, incumbent, points, evaluate=gate_set.evaluate)
        decision = gate.decide(
            challenger_scores, incumbent_scores, settings.margin, settings.significance, settings.min_gate_points
        )
        if decision.promote:
            try:
                smoke.check_serves(self.runtime, candidate)  # better on the gate, and it must serve too
            except smoke.SmokeTestFailed as failed:
                decision = dataclasses.replace(decision, promote=False, reason=f"keep champion: {failed}")
        if decision.promote:
            evidence = (incumbent_scores, challenger_scores, decision)
            _move(session, candidate, "promote", self.actor, decision.reason, *evidence)
            metrics.PROMOTIONS.inc()
        session.commit()  # also keeps the gate scores just computed
        if decision.promote:
            log.info("promoted %s: %s", candidate.name, decision.reason)
        return Outcome("promote" if decision.promote else "kept", candidate.id, decision.reason)


def promote(runtime: Runtime, model_ref: str | int, actor: str, reason: str = "promoted by hand") -> ChampionEvent:
    """Make a model the champion now, bypassing the gate (recorded as such)."""
    with runtime.sessions() as session:
        begin_write(session)  # reads, then moves the pointer: hold the SQLite write lock throughout
        model = store.model_by_name_or_id(session, model_ref)
        weights.ensure(runtime, model)  # an evicted child's weights are rebuilt from its lineage
        smoke.check_serves(runtime, model)  # never name a champion no worker would serve
        current = store.champion(session)
        if current is None:
            event = store.set_champion(session, model.id, "initial", actor, reason=reason)
        else:
            points = scoring.gate_set(session)
            incumbent = store.get_model(session, current.model_id)
            scores = (
                scoring.model_scores(session, runtime, incumbent, points),
                scoring.model_scores(session, runtime, model, points),
            )
            event = _move(session, model, "promote", actor, reason, *scores)
        metrics.PROMOTIONS.inc()
        session.commit()
        export_champion_scores(session, runtime)
        return event


def rollback(runtime: Runtime, actor: str, reason: str = "rolled back by hand") -> ChampionEvent:
    """Return the champion pointer to the model the newest promotion replaced."""
    with runtime.sessions() as session:
        begin_write(session)  # reads, then moves the pointer: hold the SQLite write lock throughout
        target = store.previous_champion(session)
        if target is None:
            raise Conflict("nothing to roll back: no promotion has replaced an earlier champion")
        weights.ensure(runtime, target)
        smoke.check_serves(runtime, target)
        event = store.set_champion(session, target.id, "rollback", actor, reason=reason)
        metrics.ROLLBACKS.inc()
        session.commit()
        export_champion_scores(session, runtime)
        return event


def _move(session, model: Model, action, actor, reason, incumbent_scores, challenger_scores, decision=None):
    n = len(challenger_scores)
    return store.set_champion(
        session,
        model.id,
        action,
        actor,
        reason=reason,
        champion_score=float(incumbent_scores.mean()) if n else None,
        challenger_score=float(challenger_scores.mean()) if n else None,
        p_value=decision.test.p_value if decision is not None else None,
        n_points=n,
    )


def export_champion_scores(session: Session, runtime: Runtime) -> dict[str, float]:
    """Set the champion's mean gate score per task as gauges; returns them."""
    current = store.champion(session)
    if current is None:
        return {}
    points = scoring.gate_set(session)
    scores = scoring.model_scores(session, runtime, store.get_model(session, current.model_id), points)
    session.commit()
    per_task = {
        task: float(scores[where].mean()) for task, where in points.task_slices().items() if where.stop > where.start
    }
    for task, value in per_task.items():
        metrics.CHAMPION_GATE_SCORE.labels(task).set(value)
    return per_task
