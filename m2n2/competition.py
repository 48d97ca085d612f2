"""Natural niches: fitness under competition for limited resources, and attraction.

Scores are a matrix S of shape (n_models, n_points) with s_ij in [0, 1]. Formulas
follow M2N2 (arXiv 2508.16204, Sec. 3.2-3.3) and its reference code.
"""

import bisect
import itertools

import torch


def point_weights(totals: torch.Tensor, capacity: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Each point's resource share c_j / z_j^alpha, with z_j = 0 counted as 1. Shape (n_points,).

    ``totals`` is z_j = sum_k s_kj and ``capacity`` is c_j = max_k s_kj. For binary scores
    c_j is 1 wherever any model solves point j (and every s_ij is 0 where none does), so
    one formula serves binary and continuous scores.
    """
    totals = torch.where(totals > 0, totals, torch.ones_like(totals))
    return capacity / totals.pow(alpha)


def shared_fitness_matrix(scores: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """F_ij = c_j s_ij / z_j^alpha, shape (n_models, n_points). alpha = 0 is the plain GA."""
    return scores * point_weights(scores.sum(dim=0), scores.amax(dim=0), alpha)


def fitness(scores: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """f_i = sum_j F_ij, shape (n_models,). All-zero rows (empty slots) get zero fitness.

    Summed row by row (not as a matrix-vector product, which sums rows in different orders), so
    models with equal scores get bit-identical fitness and ties are decided by the tie rule alone.
    """
    return shared_fitness_matrix(scores, alpha).sum(dim=1)


def attraction(shared: torch.Tensor, parent_a: int) -> torch.Tensor:
    """g(A, B) = sum_j max(F_Bj - F_Aj, 0): how strong B is where A is weak. Shape (n_models,)."""
    return (shared - shared[parent_a]).clamp_min_(0).sum(dim=1)


def sample_index(weights: torch.Tensor, occupied: torch.Tensor, generator: torch.Generator) -> int:
    """Draw an occupied index with probability proportional to ``weights``.

    If every occupied weight is zero (no member solves anything yet), draw uniformly
    among occupied slots rather than divide by zero.
    """
    w = [wi if oc else 0.0 for wi, oc in zip(weights.tolist(), occupied.tolist(), strict=True)]
    if not sum(w) > 0:
        w = [float(oc) for oc in occupied.tolist()]
    cumulative = list(itertools.accumulate(w))
    u = float(torch.rand((), generator=generator, dtype=torch.float64)) * cumulative[-1]
    # bisect_right never lands on a zero-weight index: its cumulative sum equals the previous one
    index = bisect.bisect_right(cumulative, u)
    return min(index, max(i for i, wi in enumerate(w) if wi > 0))
