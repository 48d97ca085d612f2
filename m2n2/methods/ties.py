"""TIES merging: trim, elect sign, disjoint merge.

Yadav et al. 2023, "TIES-Merging", https://arxiv.org/abs/2306.01708. Trimming is per
tensor (as in mergekit), not over the whole flattened model as in the paper's code.
``trim`` and ``disjoint_mean`` are shared with DARE's ``combine="ties"``.
"""

import torch

from m2n2.methods.registry import InvalidMergeParameter, merge_method
from m2n2.methods.task_arithmetic import check_scale, task_vectors


def check_density(density: float, method: str) -> None:
    """Raise ``InvalidMergeParameter`` unless ``density`` is in (0, 1]."""
    if not 0.0 < density <= 1.0:
        raise InvalidMergeParameter(f"{method}: density must be in (0, 1], got {density!r}")


def trim(tvs: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries of each task vector (at least one)."""
    flat = tvs.reshape(tvs.shape[0], -1)  # (n_models, numel)
    k = max(1, round(density * flat.shape[1]))
    # A stable sort breaks magnitude ties by position, so the kept set never depends on the backend.
    top = flat.abs().argsort(dim=1, descending=True, stable=True)[:, :k]  # (n_models, k)
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
    return (flat * mask).reshape(tvs.shape)


def disjoint_mean(tvs: torch.Tensor) -> torch.Tensor:
    """Elect each entry's sign by summed mass, then average the entries that agree with it."""
    # A zero sum elects +, as mergekit does; entries that are exactly zero never vote.
    elected = torch.where(tvs.sum(0) >= 0, 1.0, -1.0)  # (*shape)
    agree = torch.sign(tvs) == elected  # (n_models, *shape)
    return (tvs * agree).sum(0) / agree.sum(0).clamp(min=1)


@merge_method("ties", reference_url="https://arxiv.org/abs/2306.01708", needs_base=True)
def ties(
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    generator: torch.Generator,
    density: float = 0.2,
    scale: float = 1.0,
) -> torch.Tensor:
    """Base plus ``scale`` times the sign-elected disjoint mean of the trimmed task vectors."""
    check_density(density, "ties")
    check_scale(scale, "ties")
    tvs = task_vectors(tensors, base, "ties")  # (n_models, *shape)
    return base.float() + scale * disjoint_mean(trim(tvs, density))
