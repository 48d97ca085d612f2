"""Linear merge: a (weighted) model soup.

Wortsman et al. 2022, "Model soups", https://arxiv.org/abs/2203.05482 (their uniform soup;
weights are normalised to sum to one, as mergekit's ``linear`` does by default).
"""

import math

import torch

from m2n2.methods.registry import InvalidMergeParameter, merge_method


@merge_method("linear", reference_url="https://arxiv.org/abs/2203.05482")
def linear(
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    generator: torch.Generator,
    weights: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Weighted average of the models (a model soup); equal weights unless ``weights`` is given."""
    n = len(tensors)
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n:
        raise InvalidMergeParameter(f"linear: weights has {len(w)} entries, expected one per model ({n})")
    total = sum(w)
    if not all(math.isfinite(x) for x in w) or abs(total) < 1e-12:
        raise InvalidMergeParameter(f"linear: weights must be finite and not sum to zero, got {tuple(w)}")
    stacked = torch.stack([t.float() for t in tensors])  # (n_models, *shape)
    coef = torch.tensor([x / total for x in w], dtype=torch.float32, device=stacked.device)  # (n_models,)
    return torch.tensordot(coef, stacked, dims=1)  # (*shape)
