"""Registering a specialist: validate, store, score, and let it compete for an archive slot.

Validation happens before anything is written; a registration that fails later (say, a
name already taken) removes the artifact it stored, so a refusal leaves no trace.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ecosystem import metrics, scoring, store
from ecosystem.db import begin_write
from ecosystem.errors import RegistrationRefused
from ecosystem.families import Family
from ecosystem.genome_store import genome_store
from ecosystem.orm import Model
from ecosystem.registration import check_shards
from ecosystem.runtime import Runtime
from m2n2.checkpoint import ShardedSource, iter_tensors

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")  # org/model, optionally @revision


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
    ref: str | os.PathLike,
    *,
    name: str,
    registered_by: str,
    source: str | None = None,
    licence: str | None = None,
) -> Registration:
    """Register a specialist: a safetensors file, a checkpoint directory of the family's layout, or a hub id."""
    with runtime.sessions() as session:
        begin_write(session)
        family, config, space = runtime.family(session)
        limit = runtime.settings.registration.max_bytes
        checked = check_shards(checkpoint_files(family, config, ref), space, limit)
        if len(checked.paths) == 1:  # a single file is stored as it is, so its hash is the file's
            artifact = runtime.artifacts.put_file(checked.path, limit)
        else:  # shards become one artifact, tensors in the ecosystem's order with their own dtypes
            with ShardedSource(checked.paths) as shards:
                artifact = runtime.artifacts.write_tensors(checked.space, iter_tensors(shards, checked.space))
        existing = store.find_model_by_sha(session, artifact.sha256)
        if existing is not None:
            if artifact.created:  # the weights of an evicted child: its file goes again with the next clean-up
                runtime.artifacts.remove(artifact.sha256)
            return _duplicate(existing)
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
            result = _compete(session, runtime, model, genome_store(runtime, family, space).load(model))
            session.commit()
        except BaseException:
            session.rollback()
            if artifact.created:
                runtime.artifacts.remove(artifact.sha256)
            raise
    metrics.REGISTERED_MODELS.labels("entered" if result.entered else "refused_by_archive").inc()
    return result


def checkpoint_files(family: Family, config: dict[str, Any], ref: str | os.PathLike) -> list[Path]:
    """The safetensors files ``ref`` names: a file, a directory of the family's layout, or a hub id (``org/model``)."""
    path = Path(ref)
    if path.is_dir():
        return family.weight_files(config, path)
    if path.exists():
        return [path]
    if HUB_ID.fullmatch(str(ref)):
        from ecosystem import hub  # imported here: only hub ids need huggingface_hub

        return family.weight_files(config, hub.resolve(str(ref)))
    raise RegistrationRefused(f"{path.name}: no such file or directory (nor a hub id like org/model)")


def _duplicate(existing: Model) -> Registration:
    return Registration(
        existing.id, existing.name, existing.sha256, True, False, None, None, {}, "these weights are already stored"
    )


def _compete(session: Session, runtime: Runtime, model: Model, genome: Any) -> Registration:
    """Score the new model on the fitness window and apply the archive rule, as for any child."""
    points = scoring.fitness_set(session)
    scores = scoring.model_scores(session, runtime, model, points, genome)
    per_task = {t: float(scores[w].mean()) for t, w in points.task_slices().items() if w.stop > w.start}
    archive, members = scoring.stored_archive(session, runtime, points)
    if len(points) == 0 and len(archive) == len(archive.genomes):
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
