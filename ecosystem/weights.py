"""Which weights the ecosystem keeps on disk, and how it recreates the others from their recipes.

At 7B parameters every weights file is 14 GB, so only the models that may be needed again keep
one: archive members, registered specialists, pinned models, the champion and the newest
champions (rollback targets). An evicted child keeps its lineage row, which is its full recipe
(parents, split point, mixing ratio; the ecosystem never mutates), and ``ensure`` replays that
recipe from the nearest ancestors that still have files, bit-identical on the same machine:
the sha256 of the result must equal the one recorded when the child was made.
"""

import logging
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from ecosystem import store
from ecosystem.db import begin_write
from ecosystem.errors import Conflict
from ecosystem.genome_store import GenomeStore, genome_store
from ecosystem.orm import Model
from ecosystem.runtime import Runtime

log = logging.getLogger(__name__)


def collect_garbage(runtime: Runtime) -> list[str]:
    """Delete the weights files no retained model needs; returns the names of the models whose file went.

    Runs under the store's write lock, so a promotion (which takes it too) cannot pick a model whose
    file is being deleted. Files no model row names (a crashed writer's) are left to ``clean_tmp``.
    """
    with runtime.sessions() as session:
        begin_write(session)
        keep = store.retained_model_ids(session, runtime.settings.evolution.keep_champions)
        removed = []
        for sha256, model in store.models_by_sha(session, runtime.artifacts.list_hashes()).items():
            if model.id not in keep and runtime.artifacts.remove(sha256, durable=False):
                removed.append(model.name)
        session.commit()
    if removed:
        log.info("deleted the weights of %d evicted models (rebuildable from their lineage)", len(removed))
    return removed


def ensure(runtime: Runtime, model: Model) -> Path:
    """The model's weights file, recreated from its recipe (and its ancestors' recipes) when it was deleted."""
    path = runtime.artifacts.path_for(model.sha256)
    if path.is_file():
        return path
    with runtime.sessions() as session:
        family, _, space = runtime.family(session)
        genomes = genome_store(runtime, family, space)
        for recipe in _missing_ancestry(session, runtime, store.get_model(session, model.id)):
            _replay(genomes, recipe)  # parents before children: ids grow down a lineage
    return path


def _missing_ancestry(session: Session, runtime: Runtime, model: Model) -> list[Model]:
    """The model and every ancestor whose file is gone, oldest first; a gone specialist cannot be recreated."""
    missing, frontier = {}, [model]
    while frontier:
        current = frontier.pop()
        if current.id in missing or runtime.artifacts.exists(current.sha256):
            continue
        if not current.parent_ids:
            raise Conflict(f"the weights of registered model {current.name!r} are missing from the artifact store")
        missing[current.id] = current
        frontier.extend(store.get_model(session, p) for p in current.parent_ids)
    return sorted(missing.values(), key=lambda m: m.id)


def _replay(genomes: GenomeStore, model: Model) -> None:
    """Merge the model's parents again exactly as the evolver did, and store the result if it matches."""
    parent_a = genomes.load(model.parent_a)
    parent_b = None if model.parent_b_id is None else genomes.load(model.parent_b)
    child = genomes.genomes.child(
        parent_a,
        parent_b,
        model.mixing_ratio,
        model.split_point,
        0.0,
        torch.Generator(),  # no mutation: no draws
    )
    sha256, _ = genomes.digest(child)
    if sha256 != model.sha256:
        genomes.genomes.release(child)
        raise Conflict(
            f"replaying the recipe of {model.name!r} gave weights with sha256 {sha256[:16]}…, expected "
            f"{model.sha256[:16]}… (a different machine or library version computes differently)"
        )
    genomes.persist(child)
    log.info("rebuilt the weights of %s from its lineage", model.name)
