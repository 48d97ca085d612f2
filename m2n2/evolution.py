"""The M2N2 loop: one generation is pick parents, cross over at a split point, mutate,
score, and let the child compete for a place in the archive.

    evolver = M2N2(evaluate, EvolutionConfig(seed=42), FlatGenomes(dim))
    evolver.seed_archive([model_a, model_b])
    evolver.run(steps=10_000)
    best = evolver.best_
"""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from m2n2.archive import Archive
from m2n2.errors import InvalidScores, M2N2Error, ShapeMismatch
from m2n2.genomes import Genomes

log = logging.getLogger(__name__)

Evaluate = Callable[[Any], torch.Tensor]
EvaluateBatch = Callable[[Sequence[Any]], Sequence[torch.Tensor]]  # several genomes, scores in the same order


class EvolutionConfig(BaseModel):
    """Hyper-parameters of one M2N2 run; ablations and baselines are flags, not forks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    archive_size: int = Field(20, ge=1)  # paper: 20 for digits, 15 for LLMs
    alpha: float = Field(1.0, ge=0)  # strength of resource competition; 0 is the plain GA fitness
    attraction: bool = True
    crossover: bool = True
    split_point: bool = True
    mutation_std: float = Field(0.0, ge=0)  # paper: 0.01, only when evolving from scratch
    # Not in the paper: the mutation std is mutation_std * mutation_decay**k at generation k (k from 0),
    # so early generations explore and late ones refine; 1.0 keeps it constant, as in the paper.
    mutation_decay: float = Field(1.0, gt=0, le=1)
    # Not in the paper: children proposed per step from the same archive and scored together (k), so k
    # evaluators can work at once; their admissions follow in proposal order. 1 is the paper's serial loop.
    batch: int = Field(1, ge=1)
    seed: int = 0

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> "EvolutionConfig":
        """A named setting, e.g. ``variant("ga", seed=3)``: one of ``VARIANTS`` (the paper's) or ``MORE_VARIANTS``."""
        known = {**VARIANTS, **MORE_VARIANTS}
        if name not in known:
            raise M2N2Error(f"unknown variant {name!r}; available: {', '.join(known)}")
        return cls(**{**known[name], **overrides})


# The paper's ablations and baselines (Fig. 2), as settings of one loop.
VARIANTS: dict[str, dict[str, Any]] = {
    "m2n2": {},
    "m2n2-no-crossover": {"crossover": False},
    "m2n2-no-attraction": {"attraction": False},
    "m2n2-no-split": {"split_point": False},
    "ga": {"alpha": 0.0, "attraction": False},
}

# Also accepted by ``EvolutionConfig.variant``: the figure's GA without crossover, and settings
# of this library beyond the paper (benchmarks/digits.py reports them apart from the paper's rows).
MORE_VARIANTS: dict[str, dict[str, Any]] = {
    "ga-no-crossover": {"alpha": 0.0, "attraction": False, "crossover": False},
    # Twice the paper's mutation from scratch, and mutation from pre-trained specialists too (the paper
    # has none there). BENCHMARKS.md, digits: above the paper's M2N2 in both panels of its Fig. 2.
    "m2n2-mutation-0.02": {"mutation_std": 0.02},
}


@dataclass(frozen=True)
class Proposal:
    """A child made from the archive before it is scored: its parents' slots and its crossover draws."""

    parent_a: int
    parent_b: int | None
    mixing_ratio: float
    split_point: int
    child: Any


@dataclass(frozen=True)
class StepResult:
    """What one generation did. ``slot`` is where the child went, None if it was dropped.

    ``proposal`` is the child's place in its batch: parents' slots refer to the archive as it was
    before the batch's first admission.
    """

    parent_a: int
    parent_b: int | None
    mixing_ratio: float
    split_point: int
    child: Any
    scores: torch.Tensor  # (n_points,)
    slot: int | None
    evicted: bool  # True when the child displaced a member (not an empty slot)
    proposal: int = 0


class M2N2:
    """Model Merging of Natural Niches over an archive of ``config.archive_size`` slots."""

    def __init__(
        self,
        evaluate: Evaluate,
        config: EvolutionConfig,
        genomes: Genomes,
        evaluate_batch: EvaluateBatch | None = None,
    ) -> None:
        self.evaluate = evaluate
        self.config = config
        self.genomes = genomes
        self.evaluate_batch = evaluate_batch  # scores a batch's children at once (e.g. on several workers)

    def _ensure_state(self, n_points: int) -> None:
        if not hasattr(self, "archive_"):
            self.archive_ = Archive(self.config.archive_size, n_points, self.config.alpha)
            self.generator_ = torch.Generator().manual_seed(self.config.seed)
            self.n_evaluations_ = 0
            self.generation_ = 0
        elif n_points != self.archive_.scores.shape[1]:
            raise ShapeMismatch(f"evaluator returned {n_points} scores, archive has {self.archive_.scores.shape[1]}")

    def resume(self, archive: Archive, generator_state: torch.Tensor | None = None) -> "M2N2":
        """Continue from a stored archive (and random state), e.g. after a process restart."""
        if len(archive.genomes) != self.config.archive_size:
            raise ShapeMismatch(f"archive has {len(archive.genomes)} slots, config says {self.config.archive_size}")
        self.archive_ = archive
        self.generator_ = torch.Generator().manual_seed(self.config.seed)
        if generator_state is not None:
            self.generator_.set_state(generator_state)
        self.n_evaluations_ = 0
        self.generation_ = 0
        return self

    @property
    def best_(self) -> Any:
        """The archive member with the highest mean score."""
        return self.archive_.genomes[self.archive_.best_index()]

    def score(self, genome: Any) -> torch.Tensor:
        """Evaluate one genome and check its scores are a vector in [0, 1]."""
        return self._checked(self.evaluate(genome))

    def score_batch(self, genomes: Sequence[Any]) -> list[torch.Tensor]:
        """Evaluate several genomes (with ``evaluate_batch`` when given), checked as ``score`` checks one."""
        if self.evaluate_batch is None:
            return [self.score(genome) for genome in genomes]
        raw = list(self.evaluate_batch(genomes))
        if len(raw) != len(genomes):
            raise ShapeMismatch(f"batch evaluator returned {len(raw)} score vectors for {len(genomes)} genomes")
        return [self._checked(scores) for scores in raw]

    def _checked(self, raw: Any) -> torch.Tensor:
        scores = torch.as_tensor(raw, dtype=torch.float32)
        if scores.ndim != 1:
            raise ShapeMismatch(f"evaluator must return shape (n_points,), got {list(scores.shape)}")
        low, high = torch.aminmax(scores)
        if not (low >= 0 and high <= 1):  # also false for NaN
            raise InvalidScores(f"evaluator returned scores in [{low:g}, {high:g}], expected [0, 1]")
        self._ensure_state(scores.numel())
        self.n_evaluations_ += 1
        return scores

    def offer(self, genome: Any, scores: torch.Tensor) -> tuple[int | None, bool]:
        """Let a scored model compete for a slot: returns (its slot or None, whether a member was evicted)."""
        self._ensure_state(scores.numel())
        slot = self.archive_.replacement_slot(scores)
        if slot is None:
            return None, False
        displaced = self.archive_.put(slot, genome, scores)
        if displaced is not None:
            self.genomes.release(displaced)
        return slot, displaced is not None

    def seed_archive(self, genomes: Sequence[Any]) -> "M2N2":
        """Score starting models (specialists, or random inits) and offer each to the archive."""
        for genome in genomes:
            self.offer(genome, self.score(genome))
        return self

    def step(self) -> StepResult:
        """Run one M2N2 generation."""
        return self.step_batch(1)[0]

    def step_batch(self, k: int) -> list[StepResult]:
        """Propose ``k`` children from the current archive, score them together, then offer each in order.

        Every random draw happens while proposing, in a fixed order, so the outcome depends on the seed
        and ``k`` only, not on which evaluation finishes first. ``k = 1`` is exactly one serial generation.
        """
        if not hasattr(self, "archive_") or len(self.archive_) == 0:
            raise M2N2Error("the archive is empty: call seed_archive() first")
        proposals: list[Proposal] = []
        try:
            for _ in range(k):
                proposals.append(self._propose())
            scores = self.score_batch([p.child for p in proposals])
        except BaseException:
            for p in proposals:  # no child of a failed batch stays on disk
                self.genomes.release(p.child)
            raise
        results = []
        for i, (p, child_scores) in enumerate(zip(proposals, scores, strict=True)):
            slot, evicted = self.offer(p.child, child_scores)
            if slot is None:
                self.genomes.release(p.child)
            results.append(
                StepResult(
                    p.parent_a, p.parent_b, p.mixing_ratio, p.split_point, p.child, child_scores, slot, evicted, i
                )
            )
        return results

    def _propose(self) -> Proposal:
        """Pick parents, draw the mixing ratio and split point, and make the child (mutation draws too)."""
        cfg, gen, archive = self.config, self.generator_, self.archive_
        a, b = archive.select_parents(cfg.attraction, gen)
        if not cfg.crossover:
            b = None
        mixing_ratio = float(torch.rand((), generator=gen))
        dim = self.genomes.dim
        split = int(torch.randint(0, dim, (), generator=gen)) if cfg.split_point else dim
        parent_b = None if b is None else archive.genomes[b]
        mutation_std = cfg.mutation_std
        if cfg.mutation_decay != 1.0:
            mutation_std *= cfg.mutation_decay**self.generation_
        self.generation_ += 1
        child = self.genomes.child(archive.genomes[a], parent_b, mixing_ratio, split, mutation_std, gen)
        return Proposal(a, b, mixing_ratio, split, child)

    def run(
        self,
        steps: int | None = None,
        seconds: float | None = None,
        callback: Callable[[StepResult], None] | None = None,
        progress: bool = False,
        stop: threading.Event | None = None,
    ) -> "M2N2":
        """Run generations until ``steps`` are done or ``seconds`` have passed, whichever comes first.

        Generations go ``config.batch`` at a time (the last batch is cut to ``steps``); the time budget,
        and ``stop`` (set from another thread to end the run early), are checked between batches.
        ``callback`` sees every generation, in proposal order.
        """
        if steps is None and seconds is None:
            raise M2N2Error("run() needs a budget: steps, seconds, or both")
        deadline = None if seconds is None else time.monotonic() + seconds
        done = 0
        with tqdm(total=steps, disable=not progress, desc="M2N2", unit="step") as bar:
            while (
                (steps is None or done < steps)
                and (deadline is None or time.monotonic() < deadline)
                and not (stop is not None and stop.is_set())
            ):
                k = self.config.batch if steps is None else min(self.config.batch, steps - done)
                for result in self.step_batch(k):
                    done += 1
                    bar.update()
                    if callback is not None:
                        callback(result)
        log.debug("ran %d generations; %d evaluations in total", done, self.n_evaluations_)
        return self
