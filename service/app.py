"""The entry service: serves the champion and takes every public call.

    bentoml serve service.app:Ecosystem          # the whole ecosystem: N workers + the evolver

Each worker holds the champion in memory and hot-swaps it when the pointer moves
(``service.champion``). ``/predict`` serves any family; families that generate text also
answer the OpenAI-compatible API mounted at ``/v1`` (``service.completions``). The evolver
is a dependent service with one worker; set ``M2N2_SERVICE__EVOLVER_URL`` to reach one
running elsewhere instead. Calls that change the ecosystem need the admin bearer token.
Each route turns its typed request into one ecosystem call; errors become statuses in
``service.errors``.
"""

import asyncio
import contextlib
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
import torch
from bentoml.validators import ContentType
from pydantic import Field, ValidationError
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse

from ecosystem import metrics, promotion, report, tasks, views
from ecosystem.errors import InvalidInput
from ecosystem.imports import importable
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.smoke import finite
from ecosystem.specialists import register as register_specialist
from service import completions, images, ui
from service.auth import BearerAuth, admin_token
from service.batching import GreedyBatcher
from service.champion import ChampionWatcher, Served
from service.errors import NotReady, answers_errors, invalid
from service.evolver import EvolverService
from service.generation import GenerationBatcher
from service.guard import RequestGuard
from service.http import VERSION_HEADER, BodyLimit, InvalidInputStatus, ReadinessReport
from service.openapi import OpenAPIDocument
from service.parent import exit_with_parent
from service.routes import ROUTES, errors, file_fields, media_types, protected
from service.schemas import (
    Ancestry,
    ChampionMove,
    FeedbackResult,
    LineageEntry,
    Niches,
    Point,
    Prediction,
    RegistrationResult,
    Sample,
    Samples,
    Status,
    TaskInfo,
    TickResult,
    predict_inputs,
)

# Read once at import: worker count, batching and limits shape the service definition itself.
SETTINGS = Settings()
CONFIG = SETTINGS.service
ACTOR = "http"  # who the champion history says moved the pointer
Name = Annotated[str, Field(min_length=1, max_length=200)]
Inputs = predict_inputs(CONFIG.max_batch_size)


completions.app.include_router(images.router)  # /v1/images/generations, for families that draw images


@bentoml.asgi_app(completions.app, path="/v1")
@bentoml.asgi_app(ui.app(SETTINGS), path="/ui")  # the web page: static files, no data
@bentoml.service(name="ecosystem", workers=CONFIG.workers, traffic={"timeout": 600})
class Ecosystem:
    """Predict on the champion (or complete text, OpenAI-style); register specialists, post feedback, promote."""

    evolver = bentoml.depends(EvolverService, url=CONFIG.evolver_url)

    def __init__(self) -> None:
        exit_with_parent()  # a kill -9 of `bentoml serve` alone must not leave this worker on the port
        self.settings = Settings()
        torch.set_num_threads(self.settings.service.torch_threads)
        admin_token(self.settings)  # first start: generate and print it now, not on the first call
        self.runtime = open_runtime(self.settings, migrate=False)  # the evolver migrates
        worker = str(bentoml.server_context.worker_index or 0)
        self.watcher = ChampionWatcher(self.runtime, worker, self.settings.service.device)
        self._watching: asyncio.Task | None = None
        self.batcher = GreedyBatcher(self._predict_batch, self.settings.service.max_batch_size)
        self.generation = GenerationBatcher(lambda: self.watcher.current, self.settings.service.max_generation_rows)

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

    @bentoml.api
    @answers_errors
    async def predict(self, inputs: Inputs) -> list[Prediction]:
        """Run each input through the champion: the served family's answer and the version that answered."""
        if (served := self.watcher.current) is None:  # once set, never unset
            raise NotReady("no champion is loaded yet; /readyz answers 200 once one is")
        try:
            checked = served.inputs.validate_python(inputs)
        except ValidationError as error:
            raise invalid(error, "inputs") from None
        served, outputs = await self.batcher.submit(checked)
        if unanswerable := [i for i, output in enumerate(outputs) if not finite([output])]:
            raise InvalidInput(
                f"inputs {unanswerable[:10]}: the champion's answer is not finite (an input far outside "
                "the range the model was trained on?)"
            )
        body = [{**o, "model": served.model_name, "model_version": served.version} for o in outputs]
        # A plain JSON response: BentoML would rebuild the JSON schema of list[Prediction] for every response
        # it serialises, which costs more than the whole forward pass of a small model.
        return JSONResponse(body, headers={VERSION_HEADER: str(served.version)})

    def _predict_batch(self, inputs: list) -> tuple[Served, list]:
        """One batch on the champion as it is now: a swap during the batch does not touch it."""
        served = self.watcher.current
        metrics.PREDICT_BATCH_SIZE.observe(len(inputs))
        return served, served.predict(inputs)

    @bentoml.api
    @answers_errors
    def status(self) -> Status:
        """The archive with fitness and gate scores per task, coverage, the champion and its latest moves."""
        return Status(**report.status(self.runtime))  # its data_dir is left out: the server's disk is its own

    @bentoml.api
    @answers_errors
    def lineage(self, model: Name) -> list[LineageEntry]:
        """The model (name or id) and its ancestry: operators, split points, mixing ratios, sources."""
        return [LineageEntry(**row) for row in report.lineage_rows(self.runtime, model)]

    @bentoml.api
    @answers_errors
    def niches(self) -> Niches:
        """Each archive member's stored score on each fitness point, the points grouped by task and niche."""
        body = Niches(**views.niches(self.runtime))
        # Returned as plain JSON, as /predict's: BentoML would rebuild the response's JSON schema for every call.
        return JSONResponse(body.model_dump(mode="json"))

    @bentoml.api
    @answers_errors
    def ancestry(self, model: Name | None = None, depth: Annotated[int, Field(ge=0, le=64)] = views.DEPTH) -> Ancestry:
        """The model's (default: the champion's) ancestors as a tree: split tensors, mixing ratios, scores, sources."""
        return Ancestry(**views.ancestry(self.runtime, model, depth))

    @bentoml.api
    @answers_errors
    async def samples(self, per_task: Annotated[int, Field(ge=1, le=16)] = views.SAMPLES) -> Samples:
        """The served champion's answers on the newest gate points of each task, with its stored scores on them."""
        if (served := self.watcher.current) is None:
            raise NotReady("no champion is loaded yet; /readyz answers 200 once one is")
        points = await anyio.to_thread.run_sync(views.sample_points, self.runtime, served.model_id, per_task)
        # On the model just read, not through the batcher, so the answers and the scores are the same model's.
        answers = await anyio.to_thread.run_sync(served.predict, [p["inputs"] for p in points]) if points else []
        samples = [Sample(**p, answer=a) for p, a in zip(points, answers, strict=True)]
        who = {"model": served.model_name, "model_id": served.model_id, "version": served.version}
        return Samples(family=served.family.name, **who, samples=samples)

    @bentoml.api
    @answers_errors
    def export(self, model: Name) -> Annotated[Path, ContentType("application/zip")]:
        """A zip of the model in its family's native layout and its model card (ancestry, sources, licences)."""
        workdir = Path(tempfile.mkdtemp(prefix="m2n2-export-"))
        try:
            archive = report.export_zip(self.runtime, model, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        cleanup = BackgroundTask(shutil.rmtree, workdir, ignore_errors=True)
        return FileResponse(archive, media_type="application/zip", filename=f"{model}.zip", background=cleanup)

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
        return self._register(weights, name, registered_by, source, licence)

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
        """Register a checkpoint the server can read (a safetensors file or a checkpoint directory).

        It must lie under ``<data dir>/incoming`` or a directory of ``M2N2_REGISTRATION__IMPORT_DIRS``.
        """
        return self._register(importable(path, self.settings), name, registered_by, source, licence)

    def _register(self, checkpoint: Path, name: str, by: str, source: str | None, licence: str | None):
        who = {"name": name, "registered_by": by, "source": source, "licence": licence}
        result = register_specialist(self.runtime, checkpoint, **who)
        return RegistrationResult.model_validate(result, from_attributes=True)

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
        return TaskInfo.model_validate(task, from_attributes=True)

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
        return ChampionMove(**report.newest_move(self.runtime))

    @bentoml.api
    @answers_errors
    def rollback(self, reason: str = "rolled back over HTTP") -> ChampionMove:
        """Return the champion to the model the newest promotion replaced."""
        promotion.rollback(self.runtime, ACTOR, reason)
        return ChampionMove(**report.newest_move(self.runtime))

    @bentoml.api
    async def evolve(self, steps: Annotated[int, Field(ge=1, le=1_000_000)] | None = None) -> TickResult:
        """Run one evolution tick now on the evolver (``steps``: its budget), then the promotion gate."""
        result = await self.evolver.to_async.tick(steps=steps)
        return TickResult.model_validate(result.model_dump())


# Listed outermost first: the token, the body size and the media type are checked before BentoML reads the body.
Ecosystem.add_asgi_middleware(BearerAuth, token=functools.partial(admin_token, SETTINGS), paths=protected(SETTINGS))
Ecosystem.add_asgi_middleware(BodyLimit, max_bytes=CONFIG.max_request_bytes)
Ecosystem.add_asgi_middleware(RequestGuard, media_types=media_types(Ecosystem), file_fields=file_fields(Ecosystem))
Ecosystem.add_asgi_middleware(InvalidInputStatus, paths=ROUTES)
Ecosystem.add_asgi_middleware(ReadinessReport, report=lambda: bentoml.get_current_service().watcher.readiness())
Ecosystem.add_asgi_middleware(
    OpenAPIDocument, apis=Ecosystem.apis, errors=errors(SETTINGS), protected=protected(SETTINGS)
)
