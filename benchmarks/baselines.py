"""The non-M2N2 baselines of the paper's digits figure (arXiv 2508.16204, Fig. 2).

Each runs on a flat parameter vector, spends one forward pass per scored model, as the
M2N2 loop does, and reports the member with the best training accuracy:

- ``cma_es``: CMA-ES from the ``cma`` package (an optional dependency, extra ``bench``);
- ``MapElites``: MAP-Elites over a 10 x 10 grid of (odd-digit, even-digit) training
  accuracy, with M2N2's split-point SLERP as its variation operator;
- ``brute_force_slerp``: the best point, by training accuracy, on the SLERP arc between
  two models.

They follow the paper's reference code in their settings (population 20 and step size
0.01 for CMA-ES; the grid, the parent choice and the admission rule for MAP-Elites; the
grid of mixing ratios for brute-force SLERP). Where they differ it is said below.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from m2n2.crossover import split_slerp

Score = Callable[[torch.Tensor], torch.Tensor]  # flat vector -> per-point scores in [0, 1], shape (n_points,)
Checkpoint = Callable[[int, torch.Tensor], None]  # (forward passes so far, current best) -> None


@dataclass
class Best:
    """The model with the highest training accuracy seen so far (the first one, on ties)."""

    genome: torch.Tensor | None = None
    accuracy: float = -1.0

    def offer(self, genome: torch.Tensor, accuracy: float) -> None:
        if accuracy > self.accuracy:
            self.genome, self.accuracy = genome, accuracy


def cma_es(
    score: Score,
    x0: torch.Tensor,
    passes: int,
    seed: int,
    popsize: int = 20,
    sigma0: float = 0.01,
    checkpoint: Checkpoint | None = None,
) -> torch.Tensor:
    """Minimise minus training accuracy with CMA-ES for ``passes // popsize`` generations.

    The reference code runs the ``cma`` package's full-covariance CMA-ES. With D = 19,210
    parameters that is a 3 GB covariance matrix whose rank-one learning rate, about
    2 / D^2 = 5e-9, leaves it at the identity over the 2,500 generations of the budget;
    here the package's diagonal mode (sep-CMA-ES, Ros and Hansen 2008, ``CMA_diagonal``)
    is used, which adapts per-parameter step sizes at a usable rate in linear memory.
    As in the reference code, the package's stopping rules are not consulted: the
    budget alone ends the run.
    """
    import cma  # optional: only this baseline needs it

    options = {"popsize": popsize, "seed": seed, "CMA_diagonal": True, "verbose": -9}
    es = cma.CMAEvolutionStrategy(x0.double().numpy(), sigma0, options)
    best = Best()
    done = 0
    for _ in range(passes // popsize):
        solutions = es.ask()
        accuracies = []
        for solution in solutions:
            genome = torch.from_numpy(np.asarray(solution, dtype=np.float32))
            accuracy = float(score(genome).mean())
            best.offer(genome, accuracy)
            accuracies.append(-accuracy)
        es.tell(solutions, accuracies)
        done += popsize
        if checkpoint is not None:
            checkpoint(done, best.genome)
    return best.genome


@dataclass
class MapElites:
    """MAP-Elites (Mouret and Clune 2015) as the paper's reference code runs it on digits.

    Behaviour descriptors are the training accuracy on odd and on even digits, each cut
    into ``bins`` equal bins; quality is the training accuracy. Two parents are drawn
    from the occupied cells in proportion to their quality, crossed over with
    split-point SLERP, and mutated when ``mutation_std`` > 0; the child takes its cell
    if the cell is empty or it is better. The two parents come from two different
    cells whenever two cells have a positive quality (the reference code draws with
    replacement while the qualities sum to less than 2).
    """

    score: Score
    odd: torch.Tensor  # (n_points,) bool: which training points are odd digits
    seed: int
    mutation_std: float = 0.0
    bins: int = 10
    genomes: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    quality: dict[tuple[int, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.n_evaluations = 0

    def _cell(self, correct: torch.Tensor) -> tuple[int, int]:
        accuracies = (correct[self.odd].mean(), correct[~self.odd].mean())
        return tuple(min(int(float(a) * self.bins), self.bins - 1) for a in accuracies)  # type: ignore[return-value]

    def offer(self, genome: torch.Tensor) -> None:
        """Score a model and place it in its cell if the cell is empty or it is better."""
        correct = self.score(genome)
        self.n_evaluations += 1
        cell, quality = self._cell(correct), float(correct.mean())
        if cell not in self.quality or quality > self.quality[cell]:
            self.genomes[cell], self.quality[cell] = genome, quality

    def _parents(self) -> tuple[torch.Tensor, torch.Tensor]:
        cells = list(self.quality)
        weights = torch.tensor([self.quality[c] for c in cells], dtype=torch.float64)
        if not weights.sum() > 0:
            weights = torch.ones_like(weights)
        distinct = int((weights > 0).sum()) >= 2
        picks = torch.multinomial(weights, 2, replacement=not distinct, generator=self.generator)
        return self.genomes[cells[int(picks[0])]], self.genomes[cells[int(picks[1])]]

    def step(self) -> None:
        a, b = self._parents()
        mixing_ratio = float(torch.rand((), generator=self.generator))
        split = int(torch.randint(0, a.numel(), (), generator=self.generator))
        child = split_slerp(a, b, mixing_ratio, split)
        if self.mutation_std > 0:
            child.add_(torch.randn(a.numel(), generator=self.generator), alpha=self.mutation_std)
        self.offer(child)

    @property
    def best(self) -> torch.Tensor:
        """The elite with the highest training accuracy (the first cell in row-major order, on ties)."""
        return self.genomes[max(sorted(self.quality), key=self.quality.__getitem__)]


def brute_force_slerp(score: Score, a: torch.Tensor, b: torch.Tensor, passes: int) -> tuple[torch.Tensor, float]:
    """The best of ``passes`` evenly spaced points on the SLERP arc from ``a`` to ``b``, by training accuracy.

    Returns the model and its mixing ratio. The arc is M2N2's crossover without a split
    point (``split_slerp`` with the split at the end), so the two are comparable.
    """
    best, best_ratio = Best(), 0.0
    for ratio in torch.linspace(0, 1, passes, dtype=torch.float64).tolist():
        child = split_slerp(a, b, ratio, a.numel())
        accuracy = float(score(child).mean())
        if accuracy > best.accuracy:
            best_ratio = ratio
        best.offer(child, accuracy)
    return best.genome, best_ratio
