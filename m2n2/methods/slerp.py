"""SLERP: spherical interpolation between two models, one angle per tensor.

https://en.wikipedia.org/wiki/Slerp; per-tensor as in mergekit's ``slerp``
(https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md). M2N2's own
crossover uses one global angle instead (``m2n2.crossover``); the weights and the
near-parallel fallback are shared with it.
"""

import torch

from m2n2.crossover import cosine, slerp_weights
from m2n2.errors import M2N2Error
from m2n2.methods.registry import InvalidMergeParameter, merge_method


@merge_method("slerp", reference_url="https://en.wikipedia.org/wiki/Slerp")
def slerp(
    tensors: list[torch.Tensor], base: torch.Tensor | None, *, generator: torch.Generator, t: float = 0.5
) -> torch.Tensor:
    """Point at fraction ``t`` along the arc from model 0 to model 1 (linear when nearly parallel)."""
    if len(tensors) != 2:
        raise M2N2Error(f"slerp merges exactly 2 models, got {len(tensors)}")
    if not 0.0 <= t <= 1.0:
        raise InvalidMergeParameter(f"slerp: t must be in [0, 1], got {t!r}")
    a, b = (x.float() for x in tensors)
    # A zero tensor has no direction: cos = 1 makes slerp_weights fall back to a line.
    wa, wb = slerp_weights(cosine(a.reshape(-1), b.reshape(-1)), t)
    return torch.mul(a, wa).add_(b, alpha=wb)
