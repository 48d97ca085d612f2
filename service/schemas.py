"""Request and response bodies of the HTTP API: what the OpenAPI document shows."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from ecosystem.families import FAMILIES

PerTask = dict[str, float | None]  # task name -> mean score; None while the task has no such points


def _per_family(kind: str) -> list[dict[str, Any]]:
    """The JSON schema of each registered family's /predict input or answer, titled by family (for the docs)."""
    schemas = []
    for name, family in sorted(FAMILIES.items()):
        schema = TypeAdapter(getattr(family, kind)).json_schema()
        schemas.append({**schema, "title": f"{name}", "description": f"the {name} family"})
    return schemas


def predict_inputs(max_inputs: int) -> Any:
    """The type of /predict's ``inputs``: 1 to ``max_inputs`` values, checked against the served family's type.

    Any JSON passes the request parser (the served family is known only once a champion is loaded);
    the route validates each input against ``family.predict_input`` and names the bad field. The
    OpenAPI document shows every family's input type.
    """
    return Annotated[
        list[JsonValue],
        Field(
            min_length=1,
            max_length=max_inputs,
            description="inputs of the served family's type, e.g. feature vectors for the classifier",
            json_schema_extra={"items": {"anyOf": _per_family("predict_input")}},
        ),
    ]


class Prediction(BaseModel):
    """The champion's answer for one input: the served family's fields plus the model that answered."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"anyOf": _per_family("predict_output")})

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


class Member(BaseModel):
    """An archive member, as the status and the niches name it."""

    slot: int
    model: str
    model_id: int
    kind: str
    generation: int
    champion: bool


class ArchiveMember(Member):
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


class WorkerInfo(BaseModel):
    """One serving worker, as it last reported (every few seconds)."""

    worker: str = Field(description="host/worker index")
    version: int | None = Field(description="the champion version it serves (null: none loaded yet)")
    model: str | None = Field(description="the model it serves")
    behind: bool = Field(description="it could not load the newest champion and serves an older one")
    failed_version: int | None = Field(description="the champion version it could not load")
    error: str | None = Field(description="why that version did not load")
    seen_at: datetime


class Readiness(BaseModel):
    """``GET /readyz`` of a ready worker: what it serves (a worker that is behind stays ready)."""

    ready: bool
    worker: str
    model: str | None
    model_id: int | None
    version: int | None
    behind: bool
    failed_version: int | None
    error: str | None


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
    workers: list[WorkerInfo] = Field(description="what each serving worker actually serves")


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


# --- the web page's views (/niches, /ancestry, /samples): see ecosystem/views.py ---------------------------


class Niche(BaseModel):
    """A cluster of one task's fitness points that the archive members score alike."""

    task: str
    start: int = Field(description="its first point's column in the score matrix")
    points: int
    crowding: float = Field(description="mean over its points of the summed member scores (z_j)")
    best: int | None = Field(description="slot of the member with the highest mean score on it")
    profile: list[float] = Field(description="each member's mean score on it, in member order")


class TaskCoverage(BaseModel):
    name: str
    points: int = Field(description="fitness points in the task's window")
    coverage: float | None = Field(description="mean over its points of the best member's score")


class Niches(BaseModel):
    """The archive × fitness-points score matrix, points grouped by task and niche."""

    members: list[Member] = Field(description="the archive's members, one matrix row each, by slot")
    point_ids: list[int] = Field(description="the fitness points, one matrix column each, in display order")
    scores: list[list[float | None]] = Field(description="[member][point] stored score; null: never scored")
    best: list[int | None] = Field(
        description="per point, the slot of the best member, the lowest among ties (null: nobody scores)"
    )
    sharing: list[int] = Field(description="per point, how many members tie for the best score (0: nobody scores)")
    niches: list[Niche]
    tasks: list[TaskCoverage]
    coverage: float | None


class SplitLocation(BaseModel):
    """Where a merge's split point falls in the parameter vector."""

    index: int = Field(description="the global parameter index")
    fraction: float = Field(description="index / number of parameters")
    tensor: str = Field(description="the tensor holding it, by state-dict name")
    tensor_index: int = Field(description="its index within that tensor (flattened)")
    tensor_numel: int


class ParentRef(BaseModel):
    role: Literal["a", "b"]
    model: str
    model_id: int


class AncestryNode(BaseModel):
    model: str
    model_id: int
    depth: int = Field(description="merges away from the model asked about (0: itself)")
    kind: str
    operator: str
    generation: int
    parents: list[ParentRef] = Field(description="parents beyond the depth asked for are named but have no node")
    split: SplitLocation | None
    mixing_ratio: float | None
    sha256: str
    n_bytes: int
    registered_by: str | None
    source: str | None
    licence: str | None
    created_at: datetime
    slot: int | None = Field(description="its archive slot, if it is a member")
    champion: bool
    fitness: PerTask = Field(description="mean stored score on each task's fitness window")
    gate: PerTask = Field(description="mean stored score on each task's gate set")


class Ancestry(BaseModel):
    model: str
    version: int | None = Field(description="the champion version, when the model is the champion")
    max_depth: int
    n_params: int
    nodes: list[AncestryNode] = Field(description="the model first, then its ancestors, nearest first")


class Sample(BaseModel):
    point_id: int
    task: str
    inputs: Any
    target: Any
    score: float | None = Field(description="the model's stored score on the point (null: not scored yet)")
    answer: dict[str, Any] = Field(description="the served family's answer, as /predict gives it")


class Samples(BaseModel):
    """The served champion's answers on the newest gate points of each task."""

    family: str
    model: str
    model_id: int
    version: int
    samples: list[Sample]
