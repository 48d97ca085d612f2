"""The promotion gate: is the challenger better than the champion on the same gate points, beyond noise?

Pure functions on paired per-point scores in [0, 1]. Binary scores (solved or not) get an
exact one-sided McNemar test; continuous ones a one-sided Wilcoxon signed-rank test.
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

MCNEMAR = "mcnemar_exact"
WILCOXON = "wilcoxon_signed_rank"
NO_POINTS = "none"


@dataclass(frozen=True)
class TestResult:
    """Mean paired difference (challenger - champion), one-sided p-value, number of pairs, test used."""

    __test__ = False  # a class named Test* is not a pytest test class

    mean_diff: float
    p_value: float
    n: int
    method: str


@dataclass(frozen=True)
class Decision:
    """Whether to promote the challenger, and why, in words with the numbers."""

    promote: bool
    reason: str
    test: TestResult


def paired_test(challenger: torch.Tensor, champion: torch.Tensor) -> TestResult:
    """One-sided test that the challenger scores higher than the champion on the same points."""
    a, b = _paired(challenger, champion)
    n = len(a)
    if n == 0:
        return TestResult(0.0, 1.0, 0, NO_POINTS)
    diff = a - b  # (n,) exact in float64 for float32 scores, so ties are exactly zero
    mean_diff = float(diff.mean())
    if _binary(a) and _binary(b):
        wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        # Exact McNemar: under H0 each discordant pair favours either model with probability 1/2.
        p = 1.0 if wins + losses == 0 else stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue
        return TestResult(mean_diff, float(p), n, MCNEMAR)
    if not diff.any():
        return TestResult(mean_diff, 1.0, n, WILCOXON)  # scipy cannot rank all-zero differences
    # zero_method="wilcox" drops tied pairs, as McNemar ignores concordant ones.
    p = stats.wilcoxon(diff, zero_method="wilcox", alternative="greater").pvalue
    return TestResult(mean_diff, float(p), n, WILCOXON)


def decide(
    challenger: torch.Tensor, champion: torch.Tensor, margin: float, significance: float, min_points: int
) -> Decision:
    """Promote only with at least ``min_points`` pairs, ``mean_diff > margin`` and ``p_value < significance``."""
    if not 0 < significance <= 1:
        raise ValueError(f"significance: expected a level in (0, 1], got {significance}")
    if min_points < 1:
        raise ValueError(f"min_points: expected at least 1, got {min_points}")
    test = paired_test(challenger, champion)
    facts = (
        f"n = {test.n} gate points (min {min_points}), mean difference {test.mean_diff:+.4f} (margin {margin:.4f}), "
        f"p = {test.p_value:.4g} ({test.method}, significance {significance:g})"
    )
    failed = []
    if test.n < min_points:
        failed.append(f"too few gate points ({test.n} < {min_points})")
    if not test.mean_diff > margin:
        failed.append(f"mean difference {test.mean_diff:+.4f} is not above the margin {margin:.4f}")
    if not test.p_value < significance:
        failed.append(f"p = {test.p_value:.4g} is not below {significance:g}")
    if failed:
        return Decision(False, f"keep champion: {'; '.join(failed)}. {facts}", test)
    return Decision(True, f"promote: challenger beats champion. {facts}", test)


def _paired(challenger: torch.Tensor, champion: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Both score vectors as float64 arrays, checked to be paired, finite and in [0, 1]."""
    a = torch.as_tensor(challenger).detach().cpu().double().numpy()
    b = torch.as_tensor(champion).detach().cpu().double().numpy()
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"scores: expected two vectors of equal length, got {list(a.shape)} and {list(b.shape)}")
    for name, s in (("challenger", a), ("champion", b)):
        if not np.all((s >= 0) & (s <= 1)):  # also false for NaN
            raise ValueError(f"{name}: scores must be finite and in [0, 1]")
    return a, b


def _binary(s: np.ndarray) -> bool:
    return bool(np.all((s == 0) | (s == 1)))
