"""Registering a specialist: validate, store, score, and let it compete for an archive slot.

Validation happens before anything is written; a registration that fails later (say, a
name already taken) removes the artifact it stored, so a refusal leaves no trace.
"""

import os
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ecosystem import metrics, scoring, store
from ecosystem.db import begin_write
from ecosystem.registration import check_checkpoint
from ecosystem.runtime import Runtime
from m2n2 import Archive
from m2n2.checkpoint import SafetensorsSource, load_state_dict


@dataclass(frozen=True)
class Registration:
    """The outcome of one registration."""

    model_id: int
    name: str
    sha256: str
    duplicate: bool  # these weights were already stored (nothing new was written)
    entered: bool  # it took an archive slot
    slot: int | None
    displaced: str | None  # the member it evicted, if any
    scores: dict[str, float]  # mean fitness-window score per task
    reason: str


def register(
    runtime: Runtime,
    path: str | os.PathLike,
    *,
    name: str,
    registered_by: str,
    source: str | None = None,
    licence: str | None = None,
) -> Registration:
    """Register the safetensors file at ``path`` as a specialist of this ecosystem."""
    with runtime.sessions() as session:
        begin_write(session)
        _, _, space = runtime.family(session)
        checked = check_checkpoint(path, space, runtime.settings.registration.max_bytes)
        existing = store.find_model_by_sha(session, checked.sha256)
        if existing is not None:
            return Registration(
                existing.id,
                existing.name,
                existing.sha256,
                True,
                False,
                None,
                None,
                {},
                "these weights are already stored",
            )
        artifact = runtime.artifacts.put_file(checked.path, runtime.settings.registration.max_bytes)
        try:
            model = store.add_model(
                session,
                name=name,
                sha256=artifact.sha256,
                n_bytes=artifact.n_bytes,
                registered_by=registered_by,
                source=source,
                licence=licence,
            )
            with SafetensorsSource(artifact.path) as weights:
                flat = space.flatten(load_state_dict(weights))
            result = _compete(session, runtime, model, flat)
            session.commit()
        except BaseException:
            session.rollback()
            if artifact.created:
                runtime.artifacts.remove(artifact.sha256)
            raise
    metrics.REGISTERED_MODELS.labels("entered" if result.entered else "refused_by_archive").inc()
    return result


def _compete(session: Session, runtime: Runtime, model, flat) -> Registration:
    """Score the new model on the fitness window and apply the archive rule, as for any child."""
    eco = store.get_ecosystem(session)
    points = scoring.fitness_set(session)
    scores = scoring.model_scores(session, runtime, model, points, flat)
    per_task = {t: float(scores[w].mean()) for t, w in points.task_slices().items() if w.stop > w.start}
    archive = Archive(eco.archive_size, len(points), eco.alpha)
    members = store.archive(session)
    for slot, member in members.items():
        archive.put(slot, member.id, scoring.model_scores(session, runtime, member, points))
    if len(points) == 0 and len(archive) == eco.archive_size:
        slot, reason = None, "the archive is full and there are no fitness points to compete on yet"
    else:
        slot = archive.replacement_slot(scores)
        reason = "entered the archive" if slot is not None else "its shared fitness is below every member's"
    displaced = members[slot].name if slot is not None and slot in members else None
    if slot is not None:
        store.set_slot(session, slot, model.id)
    if store.champion(session) is None:  # something to serve from the first registration on
        store.set_champion(session, model.id, "initial", "registration", reason="first registered model")
    return Registration(model.id, model.name, model.sha256, False, slot is not None, slot, displaced, per_task, reason)
