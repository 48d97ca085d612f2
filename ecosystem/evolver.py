"""The evolver: M2N2 generations on the stored archive, one tick at a time.

Exactly one process evolves. Each tick it (re)loads the archive and the fitness window
only if they changed since its last tick, runs a budget of M2N2 steps, and then, in one
transaction, records every admitted child's lineage, writes the survivors' weights as
durable artifacts, points the archive slots at them, and stores their scores and the
random state. A crash mid-tick therefore loses only that tick: the store still points
at complete files. Children admitted and evicted within one tick keep a lineage row
(with the hash of their weights) but no file: only archive members and champions need
weights. Rows go in a few multi-row statements per tick, not a few per child.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy.orm import Session

from ecosystem import metrics, promotion, scoring, store, weights
from ecosystem.db import begin_write
from ecosystem.families import FlatScoring
from ecosystem.genome_store import GenomeStore, genome_store
from ecosystem.promotion import Outcome
from ecosystem.ray_evaluator import RayEvaluator
from ecosystem.runtime import Runtime
from m2n2 import M2N2, Archive, EvolutionConfig, StepResult

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Child:
    """A child admitted during the current tick; ``model_id`` is set once it is recorded."""

    genome: Any  # a flat vector or a child file, as the ecosystem's genome store holds them
    sha256: str
    n_bytes: int
    parent_a: "int | Child"
    parent_b: "int | Child | None"
    mixing_ratio: float
    split_point: int
    scores: torch.Tensor
    model_id: int | None = None
    recorded_now: bool = False  # its model row was created by this tick (so it has no scores yet)


Member = int | Child  # a stored model id, or a child of this tick


def _model_id(member: Member) -> int:
    """A member's stored model id (a child of this tick has one once its lineage is recorded)."""
    return member if isinstance(member, int) else member.model_id


@dataclass
class ArchiveState:
    """The archive as the evolver holds it between ticks."""

    points: scoring.PointSet
    members: list[Member | None]  # per slot
    archive: Archive
    evaluate: scoring.Evaluator
    genomes: GenomeStore
    proposed_from: list[Member | None] = field(default_factory=list)  # members when the batch was proposed

    def key(self) -> tuple[tuple[int, ...], tuple[int | None, ...]]:
        return tuple(self.points.point_ids), tuple(
            m if isinstance(m, int) or m is None else m.model_id for m in self.members
        )


@dataclass
class TickReport:
    """What one tick did."""

    steps: int = 0
    admitted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    promotion: Outcome | None = None
    skipped: str = ""  # why nothing ran, if nothing did
    admitted_models: list[int] = field(default_factory=list)


class Evolver:
    """Runs ticks for one runtime; keeps the archive in memory between ticks."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._state: ArchiveState | None = None
        self._gatekeeper = promotion.Gatekeeper(runtime)
        self.stopping = threading.Event()  # set by ``interrupt``: ticks end after their current batch
        # Children scored on a Ray cluster when an address is set (flat families score in microseconds: here).
        self.ray_ = RayEvaluator(runtime.settings.evolution) if runtime.settings.evolution.ray_address else None

    # -- loading -------------------------------------------------------------------------
    def _load(self, session: Session) -> ArchiveState | None:
        eco = store.get_ecosystem(session)
        point_ids = tuple(i for task in store.list_tasks(session) for i in store.fitness_window_ids(session, task))
        slots = store.archive(session)
        if not point_ids or not slots:
            return None
        key = (point_ids, tuple(slots[s].id if s in slots else None for s in range(eco.archive_size)))
        if self._state is not None and self._state.key() == key:
            return self._state
        points = scoring.fitness_set(session)
        family, config, space = self.runtime.family(session)
        genomes = genome_store(self.runtime, family, space)
        archive, models = scoring.stored_archive(session, self.runtime, points, genomes.load)
        members: list[Member | None] = [models[s].id if s in models else None for s in range(eco.archive_size)]
        evaluate = scoring.evaluator(self.runtime, family, config, points)
        if self.ray_ is not None and not isinstance(family, FlatScoring):
            evaluate = self.ray_.bind(family.name, evaluate)
        self._state = ArchiveState(points, members, archive, evaluate, genomes)
        return self._state

    def interrupt(self) -> None:
        """End the running tick (and any later one) after its current batch: for a bounded shutdown.

        What the tick did so far is recorded as usual; the promotion gate is skipped.
        """
        self.stopping.set()

    # -- one tick ------------------------------------------------------------------------
    def tick(self, steps: int | None = None, seconds: float | None = None) -> TickReport:
        """Run one budget of M2N2 steps (default: the settings'), persist, then try a promotion."""
        cfg = self.runtime.settings.evolution
        if steps is None and seconds is None:
            steps, seconds = cfg.steps_per_tick, cfg.seconds_per_tick
        torch.set_num_threads(cfg.torch_threads)
        report = TickReport()
        start = time.perf_counter()
        with self.runtime.sessions() as session:  # short write transaction: loading may store new scores
            begin_write(session)
            state = self._load(session)
            if state is None:
                report.skipped = "no fitness points or an empty archive: register a model and post feedback"
                return report
            eco = store.get_ecosystem(session)
            saved = store.load_evolution_state(session)
            steps_before = saved.steps if saved else 0
            generator_state = (
                None if saved is None else torch.frombuffer(bytearray(saved.generator_state), dtype=torch.uint8)
            )
            session.commit()
        loaded = state.key()[1]
        config = EvolutionConfig(archive_size=eco.archive_size, alpha=eco.alpha, seed=cfg.seed, batch=cfg.batch)
        # A Ray pool scores a batch's children at once (and times them itself); in-process, one by one.
        batch = state.evaluate.evaluate if isinstance(state.evaluate, RayEvaluator) else None
        evolver = M2N2(self._timed(state.evaluate), config, state.genomes.genomes, batch).resume(
            state.archive, generator_state
        )
        children: list[Child] = []

        def on_step(result: StepResult) -> None:
            report.steps += 1
            if result.proposal == 0:  # a batch's parents are the members before its first admission
                state.proposed_from = list(state.members)
            if result.slot is None:
                report.rejected += 1
                return
            report.admitted += 1
            child = self._remember(result, state)
            children.append(child)
            state.members[result.slot] = child

        # No transaction is open while evolving.
        evolver.run(steps=steps, seconds=seconds, callback=on_step, stop=self.stopping)
        with self.runtime.sessions() as session:
            begin_write(session)
            if not self._record(session, children, state, loaded):
                self._state = None  # someone else changed the archive meanwhile: reload next tick
            store.save_evolution_state(
                session, steps_before + report.steps, evolver.generator_.get_state().numpy().tobytes()
            )
            session.commit()
        weights.collect_garbage(self.runtime)  # evicted members' files go; their lineage rows can rebuild them
        report.admitted_models = [c.model_id for c in children if c.model_id is not None]
        self._export_archive_metrics(state)
        metrics.EVOLUTION_STEPS.inc(report.steps)
        metrics.CHILDREN.labels("admitted").inc(report.admitted)
        metrics.CHILDREN.labels("rejected").inc(report.rejected)
        report.promotion = None if self.stopping.is_set() else self._offer_best(state)
        report.seconds = time.perf_counter() - start
        log.info(
            "tick: %d steps, %d admitted, %d rejected in %.2f s",
            report.steps,
            report.admitted,
            report.rejected,
            report.seconds,
        )
        return report

    def _timed(self, evaluate: scoring.Evaluator) -> Callable[[Any], torch.Tensor]:
        def timed(genome: Any) -> torch.Tensor:
            with metrics.EVALUATION_DURATION.time():
                return evaluate(genome)

        return timed

    def _remember(self, result: StepResult, state: ArchiveState) -> Child:
        """Keep an admitted child in memory with its content hash; its file is written only if it survives the tick."""
        sha256, n_bytes = state.genomes.digest(result.child)
        parents = state.proposed_from
        parent_b = None if result.parent_b is None else parents[result.parent_b]
        return Child(
            result.child,
            sha256,
            n_bytes,
            parents[result.parent_a],
            parent_b,
            result.mixing_ratio,
            result.split_point,
            result.scores,
        )

    def _record(
        self, session: Session, children: list[Child], state: ArchiveState, loaded: tuple[int | None, ...]
    ) -> bool:
        """Record this tick's children (lineage), then the survivors' files, slots and scores.

        Returns False when the stored archive changed since ``loaded`` (a registration
        meanwhile): its slots win, and the in-memory archive must be reloaded.
        """
        self._record_lineage(session, children)
        survivors, consistent = self._survivors(session, state, loaded)
        for member in survivors.values():  # the file must be durable before any archive row points at it
            artifact = state.genomes.persist(member.genome)
            assert artifact.sha256 == member.sha256, "the genome's digest and the artifact writer disagree"
        state.genomes.drop_pending()
        store.set_slots(session, {slot: member.model_id for slot, member in survivors.items()})
        point_ids = state.points.point_ids
        for new in (True, False):  # a model recorded by an earlier tick may already hold some scores
            scores = {
                m.model_id: dict(zip(point_ids, m.scores.tolist(), strict=True))
                for m in survivors.values()
                if m.recorded_now is new
            }
            store.add_scores_of(session, scores, new_models=new)
        state.members = [_model_id(m) if m is not None else None for m in state.members]
        return consistent

    def _record_lineage(self, session: Session, children: list[Child]) -> None:
        """Give every child of this tick its model id: a new lineage row, or the model with the same weights.

        All new rows go in with one multi-row insert; a child whose parent is another child of this tick
        names that child's row, which comes earlier in the batch.
        """
        known = {sha: m.id for sha, m in store.models_by_sha(session, (c.sha256 for c in children)).items()}
        rows: dict[str, store.NewChild] = {}  # by weight hash, in admission order

        def parent(member: Member) -> int | store.NewChild:
            if isinstance(member, int):
                return member
            return known[member.sha256] if member.sha256 in known else rows[member.sha256]

        for child in children:
            if child.sha256 in known or child.sha256 in rows:  # the same weights were made before
                continue
            rows[child.sha256] = store.NewChild(
                name=f"child-{child.sha256[:16]}",
                sha256=child.sha256,
                n_bytes=child.n_bytes,
                operator="split_slerp" if child.parent_b is not None else "mutation",
                parent_a=parent(child.parent_a),
                parent_b=None if child.parent_b is None else parent(child.parent_b),
                split_point=child.split_point,
                mixing_ratio=child.mixing_ratio,
                source="m2n2 evolver",
            )
        known.update(zip(rows, store.add_children(session, list(rows.values())), strict=True))
        for child in children:
            child.model_id, child.recorded_now = known[child.sha256], child.sha256 in rows

    def _survivors(
        self, session: Session, state: ArchiveState, loaded: tuple[int | None, ...]
    ) -> tuple[dict[int, Child], bool]:
        """The children of this tick to put into archive slots, and whether the stored archive is as loaded.

        A slot a registration took meanwhile keeps its model, and so does one whose child's weights
        already hold another slot.
        """
        stored = {slot: model.id for slot, model in store.archive(session).items()}
        survivors: dict[int, Child] = {}
        consistent = True
        for slot, member in enumerate(state.members):
            if not isinstance(member, Child) or stored.get(slot) == member.model_id:
                continue
            if stored.get(slot) != loaded[slot] or member.model_id in stored.values():
                consistent = False
                continue
            survivors[slot] = member
            stored[slot] = member.model_id
        return survivors, consistent

    def _offer_best(self, state: ArchiveState) -> Outcome | None:
        """Offer the archive's best member to the gate, with the weights already in memory."""
        best = state.archive.best_index()
        return self._gatekeeper.offer(_model_id(state.members[best]), state.archive.genomes[best])

    def _export_archive_metrics(self, state: ArchiveState) -> None:
        archive = state.archive
        metrics.ARCHIVE_SIZE.set(len(archive))
        metrics.COVERAGE.set(archive.coverage())
        metrics.ENTROPY.set(archive.entropy())
        best = archive.best_index()
        for task, where in state.points.task_slices().items():
            metrics.BEST_FITNESS.labels(task).set(float(archive.scores[best, where].mean()))
