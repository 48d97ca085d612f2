"""The promotion gate: the champion changes only when a challenger is better on gate points.

Gate points are never seen by evolution. The comparison is paired, point by point, and
a move of the champion pointer is recorded with its scores and reason in the same
transaction that makes it.
"""

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ecosystem import gate, metrics, scoring, store
from ecosystem.db import begin_write
from ecosystem.errors import Conflict
from ecosystem.orm import ChampionEvent, Model
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
    settings = runtime.settings.promotion
    with runtime.sessions() as session:
        begin_write(session)  # reads, then moves the pointer: hold the SQLite write lock throughout
        candidate = store.get_model(session, candidate_id)
        current = store.champion(session)
        if current is None:
            store.set_champion(
                session, candidate.id, "initial", actor, reason="first champion: the archive's best member"
            )
            session.commit()
            export_champion_scores(session, runtime)
            return Outcome("initial", candidate.id, "first champion")
        if current.model_id == candidate.id:
            return None
        points = scoring.gate_set(session)
        incumbent = store.get_model(session, current.model_id)
        challenger_scores = scoring.model_scores(session, runtime, candidate, points)
        incumbent_scores = scoring.model_scores(session, runtime, incumbent, points)
        decision = gate.decide(
            challenger_scores, incumbent_scores, settings.margin, settings.significance, settings.min_gate_points
        )
        if decision.promote:
            _move(session, candidate, "promote", actor, decision.reason, incumbent_scores, challenger_scores, decision)
            metrics.PROMOTIONS.inc()
        session.commit()  # also keeps the gate scores just computed
        if decision.promote:
            export_champion_scores(session, runtime)
            log.info("promoted %s: %s", candidate.name, decision.reason)
        return Outcome("promote" if decision.promote else "kept", candidate.id, decision.reason)


def promote(runtime: Runtime, model_ref: str | int, actor: str, reason: str = "promoted by hand") -> ChampionEvent:
    """Make a model the champion now, bypassing the gate (recorded as such)."""
    with runtime.sessions() as session:
        begin_write(session)  # reads, then moves the pointer: hold the SQLite write lock throughout
        model = store.model_by_name_or_id(session, model_ref)
        if not runtime.artifacts.exists(model.sha256):
            raise Conflict(f"model {model.name!r} left the archive in the tick that made it; its weights were not kept")
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
