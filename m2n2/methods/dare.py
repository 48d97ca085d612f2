"""DARE: drop task-vector entries at random and rescale the survivors, then combine.

Yu et al. 2024, "Language Models are Super Mario", https://arxiv.org/abs/2311.03099.
DARE-TIES is this method with ``combine="ties"`` (mergekit's ``dare_ties``): data, not
a second class, sharing TIES's sign election.
"""

from typing import Literal

import torch

from m2n2.methods.registry import InvalidMergeParameter, merge_method
from m2n2.methods.task_arithmetic import check_scale, task_vectors
from m2n2.methods.ties import check_density, disjoint_mean

COMBINES = ("linear", "ties")


@merge_method("dare", reference_url="https://arxiv.org/abs/2311.03099", needs_base=True)
def dare(
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    generator: torch.Generator,
    density: float = 0.5,
    scale: float = 1.0,
    combine: Literal["linear", "ties"] = "linear",
) -> torch.Tensor:
    """Keep each task-vector entry with probability ``density``, rescale by 1/density, then combine."""
    check_density(density, "dare")
    check_scale(scale, "dare")
    if combine not in COMBINES:
        raise InvalidMergeParameter(f"dare: combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    tvs = task_vectors(tensors, base, "dare")  # (n_models, *shape)
    # Draw on the generator's own device (CPU) so a seed gives the same mask wherever the tensors live.
    keep = torch.rand(tvs.shape, generator=generator, device=generator.device) < density  # (n_models, *shape)
    # Rescaling by 1/density keeps each entry's expectation unchanged (the paper's Eq. 2).
    tvs = tvs * keep.to(tvs.device) / density
    merged = tvs.sum(0) if combine == "linear" else disjoint_mean(tvs)
    return base.float() + scale * merged
