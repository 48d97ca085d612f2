"""Queries shared by the evolver and the service: plain functions taking a ``Session``.

No function here opens a session or commits: the caller owns the transaction, so several calls commit
(or roll back) together. Functions that write flush, so ids are set and constraint errors surface early.
"""

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import chain
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from ecosystem.errors import Conflict, InvalidInput, NotFound
from ecosystem.orm import (
    ACTIONS,
    KINDS,
    POOLS,
    ArchiveSlot,
    Champion,
    ChampionEvent,
    DataPoint,
    Ecosystem,
    EvolutionState,
    Model,
    Score,
    Task,
    WorkerState,
    utcnow,
)
from ecosystem.points import canonical_json, check_point
from m2n2.checkpoint import DTYPE_NAMES, DTYPES
from m2n2.space import ParamSpace

WORKER_HEARTBEAT_SECONDS = 10.0  # how often each serving worker records what it serves, changed or not

IN_CHUNK = 500  # ids per IN (...) list, far below SQLite's and PostgreSQL's bound-parameter limits
SQLITE_ROWS_PER_INSERT = 333  # 3 parameters a row: 999, the bound-parameter limit of SQLite before 3.32
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Task names go into URLs and metric labels, and never contain the newline that ends them in a content hash.
MAX_ID = 2**63 - 1  # BIGINT's largest: a larger id would make the database driver fail, not find nothing
MAX_SOURCE, MAX_LICENCE = 2000, 200  # characters; the licence column is VARCHAR(200)
# Model names go into file names, URLs and Content-Disposition headers: Hugging Face's repository-name charset.
_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,96}")
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


# --- ecosystem ---------------------------------------------------------------------------------------------


def space_to_json(space: ParamSpace) -> list[list[Any]]:
    """A parameter space as stored: ``[[name, shape, safetensors dtype], ...]``."""
    return [[s.name, list(s.shape), DTYPE_NAMES[s.dtype]] for s in space]


def space_from_json(data: Sequence[Sequence[Any]]) -> ParamSpace:
    """The parameter space stored by ``space_to_json``."""
    return ParamSpace([(name, shape, DTYPES[dtype]) for name, shape, dtype in data])


def get_ecosystem(session: Session) -> Ecosystem:
    """The ecosystem this store holds."""
    ecosystem = session.get(Ecosystem, 1)
    if ecosystem is None:
        raise NotFound("this store holds no ecosystem yet; create one first")
    return ecosystem


def create_ecosystem(
    session: Session,
    *,
    family: str,
    family_config: Mapping[str, Any],
    space: ParamSpace,
    archive_size: int,
    alpha: float = 1.0,
) -> Ecosystem:
    """Create the one ecosystem of this store."""
    existing = session.get(Ecosystem, 1)
    if existing is not None:
        raise Conflict(f"this store already holds an ecosystem (family {existing.family!r}); one store, one ecosystem")
    if not family:
        raise InvalidInput("family is empty; name a registered model family, e.g. 'classifier'")
    if archive_size < 1:
        raise InvalidInput(f"archive_size is {archive_size}; it must be at least 1")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise InvalidInput(f"alpha is {alpha}; it must be a finite number >= 0")
    canonical_json(dict(family_config), what="family_config")
    ecosystem = Ecosystem(
        family=family,
        family_config=dict(family_config),
        space=space_to_json(space),
        archive_size=archive_size,
        alpha=alpha,
    )
    session.add(ecosystem)
    session.flush()
    return ecosystem


# --- models and lineage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ancestor:
    """A model in a lineage, ``depth`` merges away from the model asked about (0: itself)."""

    model: Model
    depth: int


def add_model(
    session: Session,
    *,
    name: str,
    sha256: str,
    n_bytes: int,
    kind: str = "specialist",
    operator: str = "registered",
    parent_a_id: int | None = None,
    parent_b_id: int | None = None,
    split_point: int | None = None,
    mixing_ratio: float | None = None,
    registered_by: str | None = None,
    source: str | None = None,
    licence: str | None = None,
) -> Model:
    """Record a model whose weights are stored as artifact ``sha256``; its generation follows from its parents."""
    _check_model(name, sha256, n_bytes, kind, operator, split_point, mixing_ratio, source, licence)
    parent_ids = [p for p in (parent_a_id, parent_b_id) if p is not None]
    if kind == "specialist" and parent_ids:
        raise InvalidInput("a specialist has no parents; record merged models with kind='child'")
    if kind == "child" and parent_a_id is None:
        raise InvalidInput("a child needs parent_a_id (and parent_b_id when it has two parents)")
    if (same_name := session.scalar(select(Model).where(Model.name == name))) is not None:
        raise Conflict(f"a model named {name!r} already exists (id {same_name.id})")
    if (same_weights := find_model_by_sha(session, sha256)) is not None:
        raise Conflict(f"these weights are already stored as model {same_weights.name!r} (id {same_weights.id})")
    parents = [get_model(session, p) for p in parent_ids]
    model = Model(
        name=name,
        sha256=sha256,
        n_bytes=n_bytes,
        kind=kind,
        operator=operator,
        parent_a_id=parent_a_id,
        parent_b_id=parent_b_id,
        split_point=split_point,
        mixing_ratio=mixing_ratio,
        generation=1 + max(p.generation for p in parents) if parents else 0,
        registered_by=registered_by,
        source=source,
        licence=licence,
    )
    session.add(model)
    session.flush()
    return model


def _check_model(
    name: str,
    sha256: str,
    n_bytes: int,
    kind: str,
    operator: str,
    split_point: int | None,
    mixing_ratio: float | None,
    source: str | None = None,
    licence: str | None = None,
) -> None:
    """The checks every model row passes, one at a time (``add_model``) or a tick's children at once."""
    if not _MODEL_NAME.fullmatch(name) or name.isdigit() or name in (".", ".."):
        raise InvalidInput(
            f"model name {name!r} must be 1-96 letters, digits, '.', '_' or '-' (as a Hugging Face repository "
            "name), not only digits, not '.' or '..'"
        )
    if not _SHA256.fullmatch(sha256):
        raise InvalidInput(f"sha256 {sha256!r} is not 64 lowercase hex digits")
    if n_bytes < 0:
        raise InvalidInput(f"n_bytes is {n_bytes}; it cannot be negative")
    if kind not in KINDS:
        raise InvalidInput(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if not operator or len(operator) > 50:
        raise InvalidInput(f"operator {operator!r} must be 1-50 characters")
    if split_point is not None and split_point < 0:
        raise InvalidInput(f"split_point is {split_point}; it is a parameter index, so >= 0")
    if mixing_ratio is not None and not 0 <= mixing_ratio <= 1:
        raise InvalidInput(f"mixing_ratio is {mixing_ratio}; it must lie in [0, 1]")
    if source is not None and len(source) > MAX_SOURCE:
        raise InvalidInput(f"source is {len(source)} characters; at most {MAX_SOURCE}")
    if licence is not None and len(licence) > MAX_LICENCE:
        raise InvalidInput(f"licence is {len(licence)} characters; at most {MAX_LICENCE}")


@dataclass(frozen=True, eq=False)
class NewChild:
    """A merged model for ``add_children``.

    A parent is a stored model's id, or a ``NewChild`` earlier in the same call: an evolver tick admits
    children of its own children before any of them has a row. Compared by identity, like the rows it becomes.
    """

    name: str
    sha256: str
    n_bytes: int
    operator: str
    parent_a: "int | NewChild"
    parent_b: "int | NewChild | None" = None
    split_point: int | None = None
    mixing_ratio: float | None = None
    source: str | None = None


def add_children(session: Session, children: Sequence[NewChild]) -> list[int]:
    """Record merged models (kind ``child``) with one multi-row insert; returns their ids, in order.

    The checks and the generations are those of ``add_model``, done for the whole batch with a few queries
    instead of several per child: the evolver records hundreds per tick. The ids are reserved first (a
    PostgreSQL sequence; on SQLite, above the largest id, which needs the write lock: ``begin_write``), so
    a child of a child of this batch gets its parent's id without a round trip per row.
    """
    if not children:
        return []
    for c in children:
        _check_model(c.name, c.sha256, c.n_bytes, "child", c.operator, c.split_point, c.mixing_ratio)
    _check_unique_names_and_hashes(session, children)
    generations = _stored_generations(session, children)
    for child in children:
        parents = [p for p in (child.parent_a, child.parent_b) if p is not None]
        if any(p not in generations for p in parents):  # stored parents are all there: a NewChild is missing
            raise InvalidInput(f"child {child.name!r} names a parent that is not earlier in the same batch")
        generations[child] = 1 + max(generations[p] for p in parents)
    ids = dict(zip(children, _reserve_model_ids(session, len(children)), strict=True))
    session.execute(insert(Model.__table__), [_child_row(c, ids, generations[c]) for c in children])
    return [ids[c] for c in children]


def _check_unique_names_and_hashes(session: Session, children: Sequence[NewChild]) -> None:
    """Conflict when a name or a weight hash repeats within the batch or is already stored."""
    for label, column, values in (
        ("named", Model.name, [c.name for c in children]),
        ("with weights", Model.sha256, [c.sha256 for c in children]),
    ):
        if repeated := [v for v, n in Counter(values).items() if n > 1]:
            raise Conflict(f"two children of the batch are {label} {repeated[0]!r}")
        for chunk in _chunks(sorted(values)):
            clash = session.execute(select(Model.id, column).where(column.in_(chunk)).limit(1)).first()
            if clash is not None:
                raise Conflict(f"a model {label} {clash[1]!r} already exists (id {clash[0]})")


def _stored_generations(session: Session, children: Sequence[NewChild]) -> dict[int | NewChild, int]:
    """The generations of the stored parents the batch names; NotFound for a parent id that is not stored."""
    wanted = sorted({p for c in children for p in (c.parent_a, c.parent_b) if isinstance(p, int)})
    found: dict[int | NewChild, int] = {}
    for chunk in _chunks(wanted):
        query = select(Model.id, Model.generation).where(Model.id.in_(chunk))
        found.update((model_id, generation) for model_id, generation in session.execute(query))
    if missing := [p for p in wanted if p not in found]:
        raise NotFound(f"no model with id {missing[0]}")
    return found


def _reserve_model_ids(session: Session, n: int) -> list[int]:
    """``n`` fresh model ids that no other writer gets."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        query = "SELECT nextval(pg_get_serial_sequence('models', 'id')) FROM generate_series(1, %(n)s)"
        return list(connection.exec_driver_sql(query, {"n": n}).scalars())
    # SQLite (no AUTOINCREMENT): new rows take the largest id + 1 anyway, and the write lock keeps it ours.
    start = session.scalar(select(func.coalesce(func.max(Model.id), 0))) + 1
    return list(range(start, start + n))


def _child_row(child: NewChild, ids: Mapping[NewChild, int], generation: int) -> dict[str, Any]:
    """The ``models`` row of a child, its parents in the batch replaced by their reserved ids."""

    def parent_id(parent: "int | NewChild | None") -> int | None:
        return ids[parent] if isinstance(parent, NewChild) else parent

    return {
        "id": ids[child],
        "name": child.name,
        "sha256": child.sha256,
        "n_bytes": child.n_bytes,
        "kind": "child",
        "operator": child.operator,
        "parent_a_id": parent_id(child.parent_a),
        "parent_b_id": parent_id(child.parent_b),
        "split_point": child.split_point,
        "mixing_ratio": child.mixing_ratio,
        "generation": generation,
        "source": child.source,
    }


def get_model(session: Session, model_id: int) -> Model:
    """The model with this id (an id outside the database's integer range names no model)."""
    if not 0 < model_id <= MAX_ID:
        raise NotFound(f"no model with id {model_id}")
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound(f"no model with id {model_id}")
    return model


def find_model_by_sha(session: Session, sha256: str) -> Model | None:
    """The model stored with these weights, if any."""
    return session.scalar(select(Model).where(Model.sha256 == sha256))


def model_by_name_or_id(session: Session, ref: str | int) -> Model:
    """A model named ``ref``, or with id ``ref`` when it is a number (names are never all digits)."""
    if isinstance(ref, int) or ref.isdigit():
        return get_model(session, int(ref))
    model = session.scalar(select(Model).where(Model.name == ref))
    if model is None:
        raise NotFound(f"no model named {ref!r}")
    return model


def list_models(session: Session, kind: str | None = None) -> list[Model]:
    """All models, oldest first, optionally of one kind."""
    query = select(Model).order_by(Model.id)
    if kind is not None:
        query = query.where(Model.kind == kind)
    return list(session.scalars(query))


def lineage(session: Session, model_id: int, max_depth: int | None = None) -> list[Ancestor]:
    """The model and its ancestors, breadth first; a shared ancestor appears once, at its nearest depth."""
    root = get_model(session, model_id)
    found, seen, frontier = [Ancestor(root, 0)], {root.id}, [root]
    depth = 0
    while frontier and (max_depth is None or depth < max_depth):
        depth += 1
        ids = sorted({p for m in frontier for p in m.parent_ids} - seen)
        seen.update(ids)
        # One query per generation, not per model: deep lineages stay cheap.
        frontier = [m for chunk in _chunks(ids) for m in session.scalars(select(Model).where(Model.id.in_(chunk)))]
        frontier.sort(key=lambda m: m.id)
        found.extend(Ancestor(m, depth) for m in frontier)
    return found


# --- tasks and data points ---------------------------------------------------------------------------------


def create_task(session: Session, *, name: str, scoring: str, window: int = 1000, gate_share: float = 0.2) -> Task:
    """Create a task; ``scoring`` is a rule of the ecosystem's family (checked by the caller, who knows it)."""
    if not _TASK_NAME.fullmatch(name):
        raise InvalidInput(
            f"task name {name!r} must be 1-100 letters, digits, '_', '.' or '-', not starting with a symbol"
        )
    if not scoring:
        raise InvalidInput("scoring is empty; name one of the family's scoring rules")
    if window < 1:
        raise InvalidInput(f"window is {window}; it must be at least 1 point")
    if not 0 <= gate_share <= 1:
        raise InvalidInput(f"gate_share is {gate_share}; it must lie in [0, 1]")
    if session.scalar(select(Task).where(Task.name == name)) is not None:
        raise Conflict(f"a task named {name!r} already exists")
    task = Task(name=name, scoring=scoring, window=window, gate_share=gate_share)
    session.add(task)
    session.flush()
    return task


def get_task(session: Session, name: str) -> Task:
    """The task with this name."""
    task = session.scalar(select(Task).where(Task.name == name))
    if task is None:
        raise NotFound(f"no task named {name!r}")
    return task


def list_tasks(session: Session) -> list[Task]:
    """All tasks, by name."""
    return list(session.scalars(select(Task).order_by(Task.name)))


def add_points(
    session: Session, task: Task, points: Iterable[Mapping[str, Any]]
) -> tuple[list[DataPoint], list[DataPoint]]:
    """Store new points (keys ``inputs``, ``target``, optional ``weight`` and ``pool``).

    Returns (added, duplicates): a point already stored for this task, or repeated in ``points``, is a
    duplicate and keeps its stored pool and weight. Every point is checked before any is written.
    """
    batch: list[tuple[str, dict[str, Any]]] = []
    for i, point in enumerate(points):
        batch.append(check_point(task.name, task.gate_share, i, point))
    stored: dict[str, DataPoint] = {}
    hashes = sorted({h for h, _ in batch})
    for chunk in _chunks(hashes):
        query = select(DataPoint).where(DataPoint.task_id == task.id, DataPoint.content_hash.in_(chunk))
        stored.update((p.content_hash, p) for p in session.scalars(query))
    added, duplicates = [], []
    for point_hash, values in batch:
        if point_hash in stored:
            duplicates.append(stored[point_hash])
            continue
        row = DataPoint(task_id=task.id, content_hash=point_hash, **values)
        session.add(row)
        stored[point_hash] = row
        added.append(row)
    session.flush()
    return added, duplicates


def fitness_window(session: Session, task: Task) -> list[DataPoint]:
    """The newest ``task.window`` fitness points, oldest first: what evolution optimises. Never gate points."""
    return _newest(session, task, "fitness", task.window)


def fitness_window_ids(session: Session, task: Task) -> list[int]:
    """The ids of ``fitness_window``'s points, oldest first: a cheap check of whether the window moved."""
    query = (
        select(DataPoint.id)
        .where(DataPoint.task_id == task.id, DataPoint.pool == "fitness")
        .order_by(DataPoint.id.desc())
        .limit(task.window)
    )
    return list(session.scalars(query))[::-1]


def gate_points(session: Session, task: Task, limit: int | None = None) -> list[DataPoint]:
    """The gate set (optionally only its newest ``limit`` points), oldest first: what promotion is decided on."""
    return _newest(session, task, "gate", limit)


def gate_point_ids(session: Session) -> list[int]:
    """Every task's gate point ids, task by task (by name), oldest first: the order of ``scoring.gate_set``.

    A cheap check of whether the gate set moved, without loading the points.
    """
    query = (
        select(DataPoint.id)
        .join(Task, DataPoint.task_id == Task.id)
        .where(DataPoint.pool == "gate")
        .order_by(Task.name, DataPoint.id)
    )
    return list(session.scalars(query))


def count_points(session: Session, task: Task) -> dict[str, int]:
    """How many points each pool of a task holds."""
    query = select(DataPoint.pool, func.count()).where(DataPoint.task_id == task.id).group_by(DataPoint.pool)
    counts = dict.fromkeys(POOLS, 0)
    counts.update({pool: n for pool, n in session.execute(query)})
    return counts


def _newest(session: Session, task: Task, pool: str, limit: int | None) -> list[DataPoint]:
    query = select(DataPoint).where(DataPoint.task_id == task.id, DataPoint.pool == pool).order_by(DataPoint.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))[::-1]


# --- scores ------------------------------------------------------------------------------------------------


def scores_for(session: Session, model_ids: Iterable[int], point_ids: Iterable[int]) -> dict[tuple[int, int], float]:
    """Stored scores as ``{(model_id, point_id): score}``; pairs never scored are absent."""
    models, points = sorted(set(model_ids)), sorted(set(point_ids))
    found: dict[tuple[int, int], float] = {}
    for model_chunk in _chunks(models):
        for point_chunk in _chunks(points):
            query = select(Score.model_id, Score.point_id, Score.score).where(
                Score.point_id.in_(point_chunk), Score.model_id.in_(model_chunk)
            )
            found.update(((m, p), s) for m, p, s in session.execute(query))
    return found


def add_scores(session: Session, model_id: int, scores: Mapping[int, float], new_model: bool = False) -> int:
    """Store a model's scores on points; a score already stored is kept (never re-scored). Returns how many were new.

    ``new_model=True`` says the model was created in this transaction and has no scores yet, so the
    lookups are skipped (the foreign keys still reject unknown points): the evolver stores thousands.
    """
    return add_scores_of(session, {model_id: scores}, new_models=new_model)


def add_scores_of(session: Session, scores: Mapping[int, Mapping[int, float]], new_models: bool = False) -> int:
    """``add_scores`` for several models (``{model_id: {point_id: score}}``), inserted together.

    The evolver stores every survivor of a tick at once; ``new_models=True`` as in ``add_scores``.
    """
    rows: list[tuple[int, int, float]] = []
    for model_id, model_scores in scores.items():
        checked = _checked_scores(model_scores)
        point_ids = sorted(checked)
        have = set() if new_models else _stored_score_points(session, model_id, point_ids)
        rows.extend((model_id, p, checked[p]) for p in point_ids if p not in have)
    if rows:
        _insert_scores(session, rows)
    return len(rows)


def _insert_scores(session: Session, rows: list[tuple[int, int, float]]) -> None:
    """Insert (model_id, point_id, score) rows through the driver, in as few statements as the backend allows.

    SQLAlchemy's per-row parameter processing costs ~20 us a row, and the evolver stores tens of thousands a tick.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # One statement over three arrays: psycopg's executemany runs the statement once per row (~40% slower).
        columns = tuple(map(list, zip(*rows, strict=True)))
        connection.exec_driver_sql(
            "INSERT INTO scores (model_id, point_id, score)"
            " SELECT * FROM unnest(%s::integer[], %s::integer[], %s::double precision[])",
            columns,
        )
    else:  # multi-row VALUES: sqlite3's executemany spends ~30% more per row
        for chunk in _chunks(rows, SQLITE_ROWS_PER_INSERT):
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            connection.exec_driver_sql(
                f"INSERT INTO scores (model_id, point_id, score) VALUES {values}", tuple(chain.from_iterable(chunk))
            )


def _checked_scores(scores: Mapping[int, float]) -> dict[int, float]:
    """Scores as floats; InvalidInput naming the first that is not a number in [0, 1]."""
    checked: dict[int, float] = {}
    for point_id, score in scores.items():
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise InvalidInput(f"score for point {point_id} is {score!r}, not a number") from None
        if not 0 <= value <= 1:  # also rejects NaN
            raise InvalidInput(f"score for point {point_id} is {value}; scores lie in [0, 1]")
        checked[point_id] = value
    return checked


def _stored_score_points(session: Session, model_id: int, point_ids: Sequence[int]) -> set[int]:
    """Which of ``point_ids`` the model already has scores for; NotFound for an unknown model or point."""
    get_model(session, model_id)
    known: set[int] = set()
    have: set[int] = set()
    for chunk in _chunks(point_ids):
        known.update(session.scalars(select(DataPoint.id).where(DataPoint.id.in_(chunk))))
        have.update(
            session.scalars(select(Score.point_id).where(Score.model_id == model_id, Score.point_id.in_(chunk)))
        )
    if missing := [p for p in point_ids if p not in known]:
        raise NotFound(f"no data points with ids {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return have


def models_by_sha(session: Session, hashes: Iterable[str]) -> dict[str, Model]:
    """The stored models among these weight hashes, by hash."""
    found: dict[str, Model] = {}
    for chunk in _chunks(sorted(set(hashes))):
        found.update((m.sha256, m) for m in session.scalars(select(Model).where(Model.sha256.in_(chunk))))
    return found


# --- archive -----------------------------------------------------------------------------------------------


def archive(session: Session) -> dict[int, Model]:
    """The archive's members by slot."""
    query = select(ArchiveSlot.slot, Model).join(Model, ArchiveSlot.model_id == Model.id).order_by(ArchiveSlot.slot)
    return {slot: model for slot, model in session.execute(query)}


def set_slot(session: Session, slot: int, model_id: int | None) -> None:
    """Put a model into an archive slot (replacing its member), or empty the slot with ``None``."""
    size = get_ecosystem(session).archive_size
    if not 0 <= slot < size:
        raise InvalidInput(f"slot {slot} is outside the archive (slots 0..{size - 1})")
    row = session.get(ArchiveSlot, slot)
    if model_id is None:
        if row is not None:
            session.delete(row)
            session.flush()
        return
    get_model(session, model_id)
    holder = session.scalar(select(ArchiveSlot).where(ArchiveSlot.model_id == model_id))
    if holder is not None and holder.slot != slot:
        raise Conflict(f"model {model_id} already holds archive slot {holder.slot}")
    if row is None:
        session.add(ArchiveSlot(slot=slot, model_id=model_id))
    else:
        row.model_id, row.updated_at = model_id, utcnow()
    session.flush()


def set_slots(session: Session, members: Mapping[int, int]) -> None:
    """Put models into archive slots at once (``{slot: model_id}``): the survivors of an evolver tick.

    The rules of ``set_slot``, judged on the archive as it will be: every slot lies inside the archive,
    every model is stored, and no model holds two slots. The slots' rows are replaced with one DELETE and
    one multi-row INSERT, so swapping members between the given slots is fine.
    """
    if not members:
        return
    size = get_ecosystem(session).archive_size
    if outside := [s for s in members if not 0 <= s < size]:
        raise InvalidInput(f"slot {outside[0]} is outside the archive (slots 0..{size - 1})")
    model_ids = sorted(members.values())
    if repeated := [m for m, n in Counter(model_ids).items() if n > 1]:
        raise Conflict(f"model {repeated[0]} is given two archive slots")
    stored: set[int] = set()
    for chunk in _chunks(model_ids):
        stored.update(session.scalars(select(Model.id).where(Model.id.in_(chunk))))
        holders = session.execute(select(ArchiveSlot.slot, ArchiveSlot.model_id).where(ArchiveSlot.model_id.in_(chunk)))
        for slot, model_id in holders:
            if slot not in members:
                raise Conflict(f"model {model_id} already holds archive slot {slot}")
    if missing := [m for m in model_ids if m not in stored]:
        raise NotFound(f"no model with id {missing[0]}")
    # ORM-enabled DELETE: slot objects this session already holds are dropped from its identity map too.
    session.execute(delete(ArchiveSlot).where(ArchiveSlot.slot.in_(sorted(members))))
    now = utcnow()
    rows = [{"slot": slot, "model_id": model_id, "updated_at": now} for slot, model_id in sorted(members.items())]
    session.execute(insert(ArchiveSlot.__table__), rows)


# --- champion ----------------------------------------------------------------------------------------------


def champion(session: Session) -> Champion | None:
    """The champion pointer (model and version), or None before the first one is set."""
    return session.get(Champion, 1)


def set_champion(
    session: Session,
    model_id: int,
    action: str,
    actor: str,
    reason: str = "",
    champion_score: float | None = None,
    challenger_score: float | None = None,
    p_value: float | None = None,
    n_points: int | None = None,
) -> ChampionEvent:
    """Move the champion pointer, bump its version and record why, all in the caller's transaction.

    ``action`` is ``initial`` (no champion yet), ``promote`` or ``rollback``; the scores and p-value are the
    gate evidence (incumbent vs. challenger) behind the move.
    """
    if action not in ACTIONS:
        raise InvalidInput(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if not actor or len(actor) > 200:
        raise InvalidInput("actor must name who moved the champion (1-200 characters)")
    for label, value in (
        ("champion_score", champion_score),
        ("challenger_score", challenger_score),
        ("p_value", p_value),
    ):
        if value is not None and not 0 <= value <= 1:
            raise InvalidInput(f"{label} is {value}; it must lie in [0, 1]")
    if n_points is not None and n_points < 0:
        raise InvalidInput(f"n_points is {n_points}; it cannot be negative")
    model = get_model(session, model_id)
    # Lock the pointer row (PostgreSQL; SQLite serialises writers anyway) so concurrent moves bump distinct versions.
    query = select(Champion).where(Champion.id == 1).with_for_update().execution_options(populate_existing=True)
    current = session.scalar(query)
    previous_id = None
    if action == "rollback" and current is not None:
        target = previous_champion(session)
        if target is None or target.id != model.id:
            expected = "nothing to roll back to" if target is None else f"it returns to model {target.name!r}"
            raise Conflict(f"cannot roll back to model {model.name!r}: {expected}")
    if action == "initial":
        if current is not None:
            raise Conflict(f"the champion is already set (model {current.model_id}, version {current.version})")
        current = Champion(model_id=model.id, version=1)
        session.add(current)
    else:
        if current is None:
            raise Conflict(f"there is no champion yet; set the first one with action 'initial', not {action!r}")
        if current.model_id == model.id:
            raise Conflict(f"model {model.name!r} is already the champion")
        previous_id = current.model_id
        current.model_id, current.version, current.updated_at = model.id, current.version + 1, utcnow()
    event = ChampionEvent(
        action=action,
        model_id=model.id,
        previous_model_id=previous_id,
        version=current.version,
        champion_score=champion_score,
        challenger_score=challenger_score,
        p_value=p_value,
        n_points=n_points,
        reason=reason,
        actor=actor,
    )
    session.add(event)
    session.flush()
    return event


def champion_history(session: Session, limit: int = 50) -> list[ChampionEvent]:
    """The newest ``limit`` champion events, newest first."""
    return list(session.scalars(select(ChampionEvent).order_by(ChampionEvent.id.desc()).limit(limit)))


def previous_champion(session: Session) -> Model | None:
    """The model a rollback returns to: undoes the newest promotion not already rolled back (None: nothing to undo)."""
    undone = 0
    for event in session.scalars(select(ChampionEvent).order_by(ChampionEvent.id.desc())):
        if event.action == "rollback":
            undone += 1
        elif undone:
            undone -= 1
        else:
            return None if event.previous_model_id is None else get_model(session, event.previous_model_id)
    return None


def retained_model_ids(session: Session, keep_champions: int) -> set[int]:
    """Models whose weights must stay on disk: archive members, registered and pinned models, the champion,
    the models of the newest ``keep_champions`` champion moves (with those they replaced), and the rollback target.
    """
    keep = set(session.scalars(select(ArchiveSlot.model_id)))
    keep.update(session.scalars(select(Model.id).where((Model.kind == "specialist") | Model.pinned)))
    current = champion(session)
    if current is not None:
        keep.add(current.model_id)
    for event in champion_history(session, keep_champions):
        keep.update(i for i in (event.model_id, event.previous_model_id) if i is not None)
    target = previous_champion(session)
    if target is not None:
        keep.add(target.id)
    return keep


def set_pinned(session: Session, model: Model, pinned: bool) -> None:
    """Pin a model (its weights are kept whatever happens to it) or release the pin."""
    model.pinned = pinned
    session.flush()


# --- evolution state ---------------------------------------------------------------------------------------


def load_evolution_state(session: Session) -> EvolutionState | None:
    """The evolver's saved step count and generator state, if it has saved any."""
    return session.get(EvolutionState, 1)


def save_evolution_state(session: Session, steps: int, generator_state: bytes) -> EvolutionState:
    """Save the step count and ``torch.Generator.get_state()`` as raw bytes (``.numpy().tobytes()``)."""
    if steps < 0:
        raise InvalidInput(f"steps is {steps}; it cannot be negative")
    state = session.get(EvolutionState, 1)
    if state is None:
        state = EvolutionState(steps=steps, generator_state=bytes(generator_state))
        session.add(state)
    else:
        state.steps, state.generator_state, state.updated_at = steps, bytes(generator_state), utcnow()
    session.flush()
    return state


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def report_worker(session: Session, worker: str, **state: Any) -> None:
    """Record what ``worker`` serves now (``version``, ``model_id``, ``failed_version``, ``error``)."""
    row = session.get(WorkerState, worker) or WorkerState(worker=worker)
    for key, value in state.items():
        setattr(row, key, value)
    row.seen_at = utcnow()
    session.add(row)


def live_workers(session: Session) -> list[WorkerState]:
    """The workers heard from within three heartbeats, by name; older rows (workers gone) are deleted."""
    since = utcnow() - timedelta(seconds=3 * WORKER_HEARTBEAT_SECONDS)
    session.execute(delete(WorkerState).where(WorkerState.seen_at < since))
    return list(session.scalars(select(WorkerState).order_by(WorkerState.worker)))
