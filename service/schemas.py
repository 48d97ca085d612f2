"""Request and response bodies of the HTTP API: what the OpenAPI document shows."""

from datetime import datetime
from typing import Annotated, Any, Literal

import bentoml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Finite = Annotated[float, Field(allow_inf_nan=False)]
PerTask = dict[str, float | None]  # task name -> mean score; None while the task has no such points


def _served_width(features: list[float]) -> list[float]:
    """Inputs must have the width of the served model (known once a worker has loaded its first champion)."""
    width = getattr(bentoml.get_current_service(), "input_width", None)
    if width is not None and len(features) != width:
        raise ValueError(f"expected {width} features, got {len(features)}")
    return features


Features = Annotated[list[Finite], AfterValidator(_served_width)]


class Prediction(BaseModel):
    """The champion's answer for one input."""

    label: int
    probabilities: list[float]
    model: str = Field(description="name of the champion that answered")
    model_version: int = Field(description="champion version that answered (also in the X-Model-Version header)")


class Point(BaseModel):
    """One labelled data point."""

    model_config = ConfigDict(extra="forbid")

    inputs: Any = Field(description="what the model reads: for the classifier, a list of numbers")
    target: Any = Field(description="the reference output: for the classifier, a class label")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    pool: Literal["fitness", "gate"] | None = Field(
        None, description="force the pool; by default it is chosen from the point's content and the task's gate share"
    )


class FeedbackResult(BaseModel):
    task: str
    added: int
    fitness: int = Field(description="of the added points, those in the fitness pool")
    gate: int = Field(description="of the added points, those in the gate set")
    duplicates: int = Field(description="points already stored for this task (kept as they were)")


class TaskInfo(BaseModel):
    name: str
    scoring: str
    window: int
    gate_share: float
    fitness_points: int = 0
    gate_points: int = 0


class RegistrationResult(BaseModel):
    model_id: int
    name: str
    sha256: str
    duplicate: bool = Field(description="these weights were already stored; nothing changed")
    entered: bool = Field(description="it took an archive slot")
    slot: int | None
    displaced: str | None = Field(description="the archive member it evicted")
    scores: PerTask = Field(description="mean fitness-window score per task")
    reason: str


class ArchiveMember(BaseModel):
    slot: int
    model: str
    model_id: int
    kind: str
    generation: int
    champion: bool
    fitness: PerTask
    gate: PerTask


class ChampionInfo(BaseModel):
    model: str
    model_id: int
    version: int
    in_archive: bool
    gate: PerTask


class Coverage(BaseModel):
    all: float | None
    tasks: PerTask


class ChampionMove(BaseModel):
    """A promotion or rollback, with the gate evidence behind it."""

    action: str
    model: str
    previous_model: str | None
    version: int
    champion_score: float | None
    challenger_score: float | None
    p_value: float | None
    n_points: int | None
    reason: str
    actor: str
    created_at: datetime


class Status(BaseModel):
    family: str
    family_config: dict[str, Any]
    archive_size: int
    steps: int
    tasks: list[TaskInfo]
    archive: list[ArchiveMember]
    coverage: Coverage
    champion: ChampionInfo | None
    history: list[ChampionMove] = Field(description="the newest promotions and rollbacks, newest first")


class LineageEntry(BaseModel):
    model: str
    model_id: int
    depth: int = Field(description="merges away from the model asked about (0: itself)")
    kind: str
    operator: str
    generation: int
    parents: list[str]
    split_point: int | None
    mixing_ratio: float | None
    sha256: str
    registered_by: str | None
    source: str | None
    licence: str | None
    created_at: datetime


class TickResult(BaseModel):
    steps: int
    admitted: int
    rejected: int
    seconds: float
    promotion: str | None = Field(description="what the gate decided after the tick")
    skipped: str = Field("", description="why nothing ran, if nothing did")
