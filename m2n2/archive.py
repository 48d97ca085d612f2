"""The archive: a fixed number of slots, their per-point scores, and the admission rule.

Per-point totals and capacities are cached and refreshed only when a slot changes, so
choosing parents and judging a child cost a few small vector operations per step.
"""

from typing import Any

import torch

from m2n2.competition import attraction, point_weights, sample_index, shared_fitness_matrix
from m2n2.errors import ShapeMismatch


class Archive:
    """Up to ``size`` models with their scores on the same ``n_points`` data points."""

    def __init__(self, size: int, n_points: int, alpha: float = 1.0) -> None:
        self.alpha = alpha
        self.genomes: list[Any] = [None] * size
        self.scores = torch.zeros(size, n_points)  # (size, n_points)
        self.occupied = torch.zeros(size, dtype=torch.bool)
        self._refresh()

    def __len__(self) -> int:
        return int(self.occupied.sum())

    def _refresh(self) -> None:
        self.totals = self.scores.sum(dim=0)  # z_j, (n_points,)
        self.capacity = self.scores.amax(dim=0)  # c_j, (n_points,)
        self.shared = shared_fitness_matrix(self.scores, self.alpha)  # F, (size, n_points)
        self.fitness = self.shared.sum(dim=1)  # f, (size,): as competition.fitness sums it

    def put(self, slot: int, genome: Any, scores: torch.Tensor) -> Any:
        """Place a model in a slot; returns the genome it displaced (or None)."""
        if scores.shape != self.scores.shape[1:]:
            raise ShapeMismatch(f"scores have shape {list(scores.shape)}, archive expects [{self.scores.shape[1]}]")
        old, self.genomes[slot] = self.genomes[slot], genome
        self.scores[slot] = scores
        self.occupied[slot] = True
        self._refresh()
        return old

    def select_parents(self, use_attraction: bool, generator: torch.Generator) -> tuple[int, int]:
        """Parent A ~ f / sum f; parent B ~ g(A, .) with attraction, else ~ f / sum f again.

        When g(A, .) is zero everywhere (A is at least as good as every member on every
        point) the reference code divides by zero; we fall back to fitness-proportional.
        """
        a = sample_index(self.fitness, self.occupied, generator)
        if use_attraction:
            g = attraction(self.shared, a)
            if bool((g * self.occupied).sum() > 0):
                return a, sample_index(g, self.occupied, generator)
        return a, sample_index(self.fitness, self.occupied, generator)

    def replacement_slot(self, child_scores: torch.Tensor) -> int | None:
        """Which slot a scored child takes, or None if it is dropped.

        A child always takes the first empty slot. In a full archive, fitness is
        recomputed over the members plus the child and the lowest goes; ties evict the
        member (the first lowest, as ``argmin`` does in the reference code).
        """
        empty = (~self.occupied).nonzero()
        if len(empty):
            return int(empty[0])
        weights = point_weights(self.totals + child_scores, torch.maximum(self.capacity, child_scores), self.alpha)
        rows = torch.cat([self.scores, child_scores[None]])  # (size + 1, n_points)
        # One row-wise reduction for every row, so rows with equal scores get bit-identical
        # fitness and the tie rule holds; a matrix-vector product sums rows in different orders.
        extended = (rows * weights).sum(dim=1)  # (size + 1,)
        worst = int(extended.argmin())
        return worst if worst < len(self.genomes) else None

    def coverage(self) -> float:
        """Mean over points of the best member's score: the share of points solved, for binary scores."""
        return float(self.capacity.mean()) if self.capacity.numel() else 0.0

    def entropy(self) -> float:
        """Entropy (nats) of parent selection, f / sum f: high when many niches are alive."""
        total = self.fitness.sum()
        if not total > 0:
            return 0.0
        p = self.fitness[self.fitness > 0] / total
        return float(-(p * p.log()).sum())

    def best_index(self) -> int:
        """The occupied slot with the highest mean score (train accuracy, for binary scores)."""
        return int(self.scores.mean(dim=1).masked_fill(~self.occupied, -1.0).argmax())
