"""The store's tables as SQLAlchemy 2 ORM classes; docs/ecosystem.md describes each one."""

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

KINDS = ("specialist", "child")
POOLS = ("fitness", "gate")
ACTIONS = ("initial", "promote", "rollback")

# Named constraints, so later (batch) migrations on SQLite can find and alter them (Alembic docs,
# "The Importance of Naming Constraints").
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that stores UTC and always reads back aware datetimes (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} has no time zone; pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with the naming convention and the column types shared by every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        float: Double(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Ecosystem(Base):
    """The single row describing this ecosystem's architecture family."""

    __tablename__ = "ecosystem"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    family: Mapped[str] = mapped_column(String(100))
    family_config: Mapped[dict[str, Any]]
    space: Mapped[list[Any]]  # [[tensor name, shape, safetensors dtype], ...] in canonical order
    archive_size: Mapped[int]
    alpha: Mapped[float]


class Model(Base):
    """A stored model: a registered specialist or an evolved child, with its lineage."""

    __tablename__ = "models"
    __table_args__ = (CheckConstraint(_in("kind", KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    operator: Mapped[str] = mapped_column(String(50))
    parent_a_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    parent_b_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    split_point: Mapped[int | None] = mapped_column(BigInteger)  # a global parameter index: can exceed 2**31
    mixing_ratio: Mapped[float | None]
    generation: Mapped[int] = mapped_column(default=0)
    registered_by: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str | None] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(String(200))
    # A pinned model keeps its weights file even when it leaves the archive (ecosystem.weights).
    pinned: Mapped[bool] = mapped_column(default=False, server_default=false())

    parent_a: Mapped["Model | None"] = relationship(remote_side=[id], foreign_keys=[parent_a_id])
    parent_b: Mapped["Model | None"] = relationship(remote_side=[id], foreign_keys=[parent_b_id])

    @property
    def parent_ids(self) -> tuple[int, ...]:
        """The ids of this model's parents (none for a specialist)."""
        return tuple(p for p in (self.parent_a_id, self.parent_b_id) if p is not None)


class Task(Base):
    """A task that clients feed with labelled data points."""

    __tablename__ = "tasks"
    __table_args__ = (
        # "window" is a reserved word in PostgreSQL, hence the quotes.
        CheckConstraint('"window" >= 1', name="window_positive"),
        CheckConstraint("gate_share >= 0 AND gate_share <= 1", name="gate_share_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scoring: Mapped[str] = mapped_column(String(50))
    window: Mapped[int]
    gate_share: Mapped[float]


class DataPoint(Base):
    """One labelled example of a task, in the fitness pool or the gate set."""

    __tablename__ = "data_points"
    __table_args__ = (
        UniqueConstraint("task_id", "content_hash"),
        Index("ix_data_points_task_id_pool_id", "task_id", "pool", "id"),  # the newest points of one pool
        CheckConstraint(_in("pool", POOLS), name="pool"),
        CheckConstraint("weight > 0", name="weight_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    inputs: Mapped[Any] = mapped_column(JSON, nullable=False)
    target: Mapped[Any] = mapped_column(JSON, nullable=False)  # JSON null is allowed, SQL NULL is not
    weight: Mapped[float] = mapped_column(default=1.0)
    pool: Mapped[str] = mapped_column(String(10))
    content_hash: Mapped[str] = mapped_column(String(64))

    task: Mapped[Task] = relationship()


class Score(Base):
    """One model's score on one data point, in [0, 1]; written once, never re-scored."""

    __tablename__ = "scores"
    __table_args__ = (
        Index("ix_scores_point_id_model_id", "point_id", "model_id"),  # every score of a set of points
        CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    point_id: Mapped[int] = mapped_column(ForeignKey("data_points.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[float]


class ArchiveSlot(Base):
    """Archive membership: which model holds which slot."""

    __tablename__ = "archive_slots"
    __table_args__ = (CheckConstraint("slot >= 0", name="slot_nonnegative"),)

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), unique=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship()


class Champion(Base):
    """The single row pointing at the served model."""

    __tablename__ = "champion"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]  # 1 for the first champion, +1 on every change: workers poll it
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship()


class ChampionEvent(Base):
    """One move of the champion pointer, with the evidence behind it."""

    __tablename__ = "champion_events"
    __table_args__ = (CheckConstraint(_in("action", ACTIONS), name="action"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(20))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    previous_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]  # the champion version this event produced
    champion_score: Mapped[float | None]
    challenger_score: Mapped[float | None]
    p_value: Mapped[float | None]
    n_points: Mapped[int | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200))


class EvolutionState(Base):
    """The single row that lets a restarted evolver continue its random stream."""

    __tablename__ = "evolution_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    steps: Mapped[int] = mapped_column(BigInteger, default=0)
    generator_state: Mapped[bytes] = mapped_column(LargeBinary)  # torch.Generator.get_state() bytes, never pickled
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerState(Base):
    """What one serving worker actually serves, and the champion version it could not load, if any.

    Each worker writes its row when that changes and as a heartbeat; ``/status`` lists the rows
    seen recently, so a worker that fell back to an older champion shows.
    """

    __tablename__ = "workers"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid/index
    version: Mapped[int | None]  # the champion version it serves (None: none loaded yet)
    model_id: Mapped[int | None]
    failed_version: Mapped[int | None]  # the newest champion version it could not load
    error: Mapped[str | None] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
