"""The entry service: serves the champion and takes every public call.

    bentoml serve service.app:Ecosystem          # the whole ecosystem: N workers + the evolver

Each worker holds the champion in memory and hot-swaps it when the pointer moves
(``service.champion``). The evolver is a dependent service with one worker; set
``M2N2_SERVICE__EVOLVER_URL`` to reach one running elsewhere (a cluster) instead of
starting it here. Calls that change the ecosystem need the admin bearer token.
"""

import asyncio
import contextlib
import functools
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Any, TypeVar

import bentoml
import torch
from bentoml.validators import ContentType
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse

from ecosystem import metrics, promotion, report, store, tasks
from ecosystem.db import begin_write
from ecosystem.errors import InvalidInput
from ecosystem.orm import ChampionEvent
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import Registration
from ecosystem.specialists import register as register_specialist
from service.auth import BearerAuth, admin_token
from service.batching import GreedyBatcher
from service.champion import ChampionWatcher, Served
from service.errors import answers_errors, error_response
from service.evolver import EvolverService
from service.http import VERSION_HEADER, BodyLimit, InvalidInputStatus, OpenAPIErrors
from service.schemas import (
    ChampionMove,
    Features,
    FeedbackResult,
    LineageEntry,
    Point,
    Prediction,
    RegistrationResult,
    Status,
    TaskInfo,
    TickResult,
)

log = logging.getLogger(__name__)
S = TypeVar("S", bound=BaseModel)

# Read once at import: worker count, batching and limits shape the service definition itself.
SETTINGS = Settings()
CONFIG = SETTINGS.service
ACTOR = "http"  # who the champion history says moved the pointer
HISTORY = 20  # champion moves listed by /status

READS = {"/predict", "/status", "/lineage", "/export"}
WRITES = {"/register", "/register_path", "/tasks", "/feedback", "/promote", "/rollback", "/evolve"}
PROTECTED = WRITES | READS if CONFIG.protect_reads else WRITES
Name = Annotated[str, Field(min_length=1, max_length=200)]
# The error statuses each route answers besides 500, as its OpenAPI entry lists them.
_ERRORS: dict[str, set[int]] = {
    "/predict": {413, 422, 503},
    "/status": {413},
    "/lineage": {404, 413, 422},
    "/export": {404, 409, 413, 422},
    "/register": {409, 413, 422},
    "/register_path": {409, 413, 422},
    "/tasks": {409, 413, 422},
    "/feedback": {404, 413, 422},
    "/promote": {404, 409, 413, 422},
    "/rollback": {409, 413, 422},
    "/evolve": {413, 422},
}
ERRORS = {route: codes | ({401, 403} if route in PROTECTED else set()) for route, codes in _ERRORS.items()}


@bentoml.service(name="ecosystem", workers=CONFIG.workers, traffic={"timeout": 600})
class Ecosystem:
    """Predict on the champion; register specialists, post feedback and steer promotion."""

    evolver = bentoml.depends(EvolverService, url=CONFIG.evolver_url)

    def __init__(self) -> None:
        self.settings = Settings()
        torch.set_num_threads(self.settings.service.torch_threads)
        admin_token(self.settings)  # first start: generate and print it now, not on the first call
        self.runtime = open_runtime(self.settings, migrate=False)  # the evolver migrates
        self.watcher = ChampionWatcher(self.runtime, worker=str(bentoml.server_context.worker_index or 0))
        self._watching: asyncio.Task | None = None
        self.batcher = GreedyBatcher(self._predict_batch, self.settings.service.max_batch_size)

    @bentoml.on_startup
    async def start_watching(self) -> None:
        """Poll the champion pointer for the life of the worker."""
        self._watching = asyncio.create_task(self.watcher.watch(self.settings.service.poll_seconds))

    @bentoml.on_shutdown
    async def stop_watching(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        self.runtime.close()

    def __is_ready__(self) -> bool:
        """Ready once a champion is loaded and passed its smoke inference."""
        return self.watcher.current is not None

    @property
    def input_width(self) -> int | None:
        """Features per input of the served architecture (checked while the request is parsed)."""
        return self.watcher.input_width

    # -- serving -------------------------------------------------------------------------------------
    @bentoml.api
    async def predict(
        self, inputs: Annotated[list[Features], Field(min_length=1, max_length=CONFIG.max_batch_size)]
    ) -> list[Prediction]:
        """Classify each input with the champion: label, class probabilities and the version that answered."""
        if self.watcher.current is None:  # once set, never unset: later batches always find a champion
            return error_response(503, "no champion is loaded yet; /readyz answers 200 once one is")
        served, outputs = await self.batcher.submit(inputs)
        body = [{**o, "model": served.model_name, "model_version": served.version} for o in outputs]
        # Answered as a plain JSON response: BentoML would rebuild the JSON schema of list[Prediction] for
        # every response it serialises, which costs more than the whole forward pass of a small model.
        return JSONResponse(body, headers={VERSION_HEADER: str(served.version)})

    def _predict_batch(self, inputs: list) -> tuple[Served, list[dict[str, Any]]]:
        """One batch on the champion as it is now: a swap during the batch does not touch it."""
        served = self.watcher.current
        metrics.PREDICT_BATCH_SIZE.observe(len(inputs))
        return served, served.predict(inputs)

    # -- reading ------------------------------------------------------------------------------------
    @bentoml.api
    @answers_errors
    def status(self) -> Status:
        """The archive with fitness and gate scores per task, coverage, the champion and its latest moves."""
        with self.runtime.sessions() as session:
            begin_write(session)  # gate scores not stored yet are computed and kept
            data = report.collect_status(session, self.runtime)
            history = [_move(session, event) for event in store.champion_history(session, HISTORY)]
            session.commit()
        data.pop("data_dir")
        return Status(**data, history=history)

    @bentoml.api
    @answers_errors
    def lineage(self, model: Name) -> list[LineageEntry]:
        """The model (name or id) and its ancestry: operators, split points, mixing ratios, sources."""
        with self.runtime.sessions() as session:
            ancestors = store.lineage(session, store.model_by_name_or_id(session, model).id)
            names = {a.model.id: a.model.name for a in ancestors}
            return [_lineage_entry(a, names) for a in ancestors]

    @bentoml.api
    @answers_errors
    def export(self, model: Name) -> Annotated[Path, ContentType("application/zip")]:
        """A zip of the model's safetensors file and its model card (ancestry, sources, licences)."""
        workdir = Path(tempfile.mkdtemp(prefix="m2n2-export-"))
        try:
            report.export_model(self.runtime, model, workdir / "model")
            archive = workdir / "model.zip"
            with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for path in sorted((workdir / "model").iterdir()):
                    zf.write(path, path.name)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        filename = f"{model}.zip"
        cleanup = BackgroundTask(shutil.rmtree, workdir, ignore_errors=True)
        return FileResponse(archive, media_type="application/zip", filename=filename, background=cleanup)

    # -- changing the ecosystem (admin token) --------------------------------------------------------
    @bentoml.api
    @answers_errors
    def register(
        self,
        weights: Annotated[Path, ContentType("application/octet-stream")],
        name: Name,
        source: str | None = None,
        licence: str | None = None,
        registered_by: Name = ACTOR,
    ) -> RegistrationResult:
        """Upload a specialist's safetensors file (multipart); it is checked, scored and offered to the archive."""
        return _registration(register_specialist(self.runtime, weights, **_who(name, registered_by, source, licence)))

    @bentoml.api
    @answers_errors
    def register_path(
        self,
        path: Name,
        name: Name,
        source: str | None = None,
        licence: str | None = None,
        registered_by: Name = ACTOR,
    ) -> RegistrationResult:
        """Register a safetensors file the server can read (for files too large to upload).

        It must lie under ``<data dir>/incoming`` or a directory of ``M2N2_REGISTRATION__IMPORT_DIRS``.
        """
        checkpoint = _importable(Path(path), self.settings)
        return _registration(
            register_specialist(self.runtime, checkpoint, **_who(name, registered_by, source, licence))
        )

    @bentoml.api(route="/tasks")
    @answers_errors
    def create_task(
        self,
        name: Name,
        scoring: str,
        window: Annotated[int, Field(ge=1)] | None = None,
        gate_share: Annotated[float, Field(ge=0, le=1)] | None = None,
    ) -> TaskInfo:
        """Create a task; ``scoring`` is one of the family's rules (the classifier's: accuracy, likelihood)."""
        task = tasks.create_task(self.runtime, name=name, scoring=scoring, window=window, gate_share=gate_share)
        return TaskInfo(name=task.name, scoring=task.scoring, window=task.window, gate_share=task.gate_share)

    @bentoml.api
    @answers_errors
    def feedback(self, task: Name, points: Annotated[list[Point], Field(min_length=1)]) -> FeedbackResult:
        """Add labelled points to a task, all or none; each joins the fitness pool or the gate set."""
        added, duplicates = tasks.add_feedback(self.runtime, task, [p.model_dump(exclude_none=True) for p in points])
        gate = sum(p.pool == "gate" for p in added)
        return FeedbackResult(
            task=task, added=len(added), fitness=len(added) - gate, gate=gate, duplicates=len(duplicates)
        )

    @bentoml.api
    @answers_errors
    def promote(self, model: Name, reason: str = "promoted over HTTP") -> ChampionMove:
        """Make a model (name or id) the champion now, bypassing the gate; recorded with both gate scores."""
        promotion.promote(self.runtime, model, ACTOR, reason)
        return self._newest_move()

    @bentoml.api
    @answers_errors
    def rollback(self, reason: str = "rolled back over HTTP") -> ChampionMove:
        """Return the champion to the model the newest promotion replaced."""
        promotion.rollback(self.runtime, ACTOR, reason)
        return self._newest_move()

    @bentoml.api
    async def evolve(self, steps: Annotated[int, Field(ge=1, le=1_000_000)] | None = None) -> TickResult:
        """Run one evolution tick now on the evolver (``steps``: its budget), then the promotion gate."""
        result = await self.evolver.to_async.tick(steps=steps)
        return TickResult.model_validate(result.model_dump())

    def _newest_move(self) -> ChampionMove:
        with self.runtime.sessions() as session:
            return _move(session, store.champion_history(session, 1)[0])


def _who(name: str, registered_by: str, source: str | None, licence: str | None) -> dict[str, str | None]:
    return {"name": name, "registered_by": registered_by, "source": source, "licence": licence}


def _importable(path: Path, settings: Settings) -> Path:
    """``path`` resolved, if it lies under a directory the service may register from."""
    roots = [settings.data_dir / "incoming", *settings.registration.import_dirs]
    resolved = path.resolve()
    if not path.is_absolute() or not any(resolved.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise InvalidInput(f"path must be absolute and lie under one of: {allowed} (M2N2_REGISTRATION__IMPORT_DIRS)")
    return resolved


def _from(source: object, schema: type[S], **extra: Any) -> S:
    """``schema`` filled from ``source``'s attributes of the same names, and from ``extra``."""
    fields = {f: getattr(source, f) for f in schema.model_fields if f not in extra and hasattr(source, f)}
    return schema(**fields, **extra)


def _registration(result: Registration) -> RegistrationResult:
    return _from(result, RegistrationResult)


def _move(session: Session, event: ChampionEvent) -> ChampionMove:
    previous = None if event.previous_model_id is None else store.get_model(session, event.previous_model_id).name
    return _from(event, ChampionMove, model=store.get_model(session, event.model_id).name, previous_model=previous)


def _lineage_entry(ancestor: store.Ancestor, names: dict[int, str]) -> LineageEntry:
    m = ancestor.model
    parents = [names.get(p, str(p)) for p in m.parent_ids]
    return _from(m, LineageEntry, model=m.name, model_id=m.id, depth=ancestor.depth, parents=parents)


# Listed outermost first: the token and the body size are checked before BentoML reads the body.
Ecosystem.add_asgi_middleware(
    BearerAuth,
    token=functools.partial(admin_token, SETTINGS),
    paths=PROTECTED,
)
Ecosystem.add_asgi_middleware(BodyLimit, max_bytes=CONFIG.max_request_bytes)
Ecosystem.add_asgi_middleware(InvalidInputStatus, paths=READS | WRITES)
Ecosystem.add_asgi_middleware(OpenAPIErrors, errors=ERRORS)
