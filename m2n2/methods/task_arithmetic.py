"""Task arithmetic: add the models' task vectors (model - base) to the base.

Ilharco et al. 2023, "Editing models with task arithmetic", https://arxiv.org/abs/2212.04089.
``task_vectors`` is shared with TIES and DARE.
"""

import math

import torch

from m2n2.errors import M2N2Error
from m2n2.methods.registry import InvalidMergeParameter, merge_method


def task_vectors(tensors: list[torch.Tensor], base: torch.Tensor | None, method: str) -> torch.Tensor:
    """Each model minus the base, in float32, shape (n_models, *shape)."""
    if base is None:
        raise M2N2Error(f"{method} needs a base model (task vectors are model - base)")
    return torch.stack([t.float() for t in tensors]).sub_(base.float())  # in place: one allocation


def check_scale(scale: float, method: str) -> None:
    """Raise ``InvalidMergeParameter`` unless ``scale`` is a finite number."""
    if not math.isfinite(scale):
        raise InvalidMergeParameter(f"{method}: scale must be finite, got {scale!r}")


@merge_method("task_arithmetic", reference_url="https://arxiv.org/abs/2212.04089", needs_base=True)
def task_arithmetic(
    tensors: list[torch.Tensor], base: torch.Tensor | None, *, generator: torch.Generator, scale: float = 1.0
) -> torch.Tensor:
    """Base plus ``scale`` times the sum of the task vectors."""
    check_scale(scale, "task_arithmetic")
    tvs = task_vectors(tensors, base, "task_arithmetic")  # (n_models, *shape)
    return base.float() + scale * tvs.sum(0)
