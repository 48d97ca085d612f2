"""Split-point SLERP crossover and Gaussian mutation (M2N2, arXiv 2508.16204, Sec. 3).

The child takes mixing ratio t = w_m on global indices before the split point and
t = 1 - w_m from it on, and lies on the SLERP arc between its parents:

    child = sin((1 - t) Omega) / sin(Omega) * A + sin(t Omega) / sin(Omega) * B

with one global angle Omega between the *whole* parameter vectors, as the
reference code computes it. When sin(Omega) is tiny the arc is a line, so we
fall back to linear interpolation.
"""

import math
from collections.abc import Iterator

import torch

from m2n2.checkpoint import TensorSource
from m2n2.space import ParamSpace

# Below this sin(Omega) the parents are (anti)parallel and SLERP's weights blow up;
# the reference code switches to linear interpolation at the same threshold.
SIN_EPS = 1e-6
DOT_CHUNK = 1 << 16  # elements per float32 dot of the angle pass (summed in float64)


def slerp_weights(cos_omega: float, t: float) -> tuple[float, float]:
    """Weights (on A, on B) of the point at fraction t along the arc from A to B."""
    omega = math.acos(min(1.0, max(-1.0, cos_omega)))
    sin_omega = math.sin(omega)
    if sin_omega <= SIN_EPS:
        return 1.0 - t, t
    return math.sin((1.0 - t) * omega) / sin_omega, math.sin(t * omega) / sin_omega


def _cosine(dot: float, norm_a2: float, norm_b2: float) -> float:
    denom = math.sqrt(norm_a2 * norm_b2)
    return dot / denom if denom > 0 else 1.0  # a zero vector has no angle: interpolate


def split_slerp(a: torch.Tensor, b: torch.Tensor, mixing_ratio: float, split_point: int) -> torch.Tensor:
    """Crossover of two flat parameter vectors of shape (dim,)."""
    cos = _cosine(torch.dot(a, b).item(), torch.dot(a, a).item(), torch.dot(b, b).item())
    child = torch.empty_like(a)
    for lo, hi, t in ((0, split_point, mixing_ratio), (split_point, a.numel(), 1.0 - mixing_ratio)):
        if hi > lo:
            wa, wb = slerp_weights(cos, t)
            torch.mul(a[lo:hi], wa, out=child[lo:hi]).add_(b[lo:hi], alpha=wb)
    return child


def global_cosine(a: TensorSource, b: TensorSource, space: ParamSpace) -> float:
    """cos(Omega) between two whole models, one pass over both, one tensor of each at a time."""
    dot = norm_a2 = norm_b2 = 0.0
    for spec in space:
        ta, tb = _pair(a, b, spec.name)
        # Chunked float32 dots summed in float64: a float32 sum over a whole embedding matrix loses digits.
        for ca, cb in zip(ta.split(DOT_CHUNK), tb.split(DOT_CHUNK), strict=True):
            dot += torch.dot(ca, cb).item()
            norm_a2 += torch.dot(ca, ca).item()
            norm_b2 += torch.dot(cb, cb).item()
        del ta, tb
    return _cosine(dot, norm_a2, norm_b2)


def split_slerp_tensors(
    a: TensorSource,
    b: TensorSource,
    space: ParamSpace,
    mixing_ratio: float,
    split_point: int,
    cos_omega: float | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Crossover of two large models, tensor by tensor over the global index.

    Two passes over the parents: one for the global angle (skipped when the caller knows
    ``cos_omega``, from ``global_cosine``), one yielding child tensors. At most one tensor
    of each parent is held at a time.
    """
    cos = global_cosine(a, b, space) if cos_omega is None else cos_omega
    before, after = slerp_weights(cos, mixing_ratio), slerp_weights(cos, 1.0 - mixing_ratio)
    for spec in space:
        ta, tb = _pair(a, b, spec.name)
        cut = min(max(split_point - spec.offset, 0), spec.numel)  # local split inside this tensor
        child = torch.empty_like(ta)
        for lo, hi, (wa, wb) in ((0, cut, before), (cut, spec.numel, after)):
            if hi > lo:
                torch.mul(ta[lo:hi], wa, out=child[lo:hi]).add_(tb[lo:hi], alpha=wb)
        del ta, tb
        yield spec.name, child.view(spec.shape).to(spec.dtype)


def _pair(a: TensorSource, b: TensorSource, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both parents' tensor ``name`` as flat float32 vectors."""
    return a.get(name).float().reshape(-1), b.get(name).float().reshape(-1)


def mutate_tensors(
    tensors: Iterator[tuple[str, torch.Tensor]], std: float, generator: torch.Generator
) -> Iterator[tuple[str, torch.Tensor]]:
    """Add N(0, std^2) noise to each tensor as it streams past."""
    for name, t in tensors:
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float32) * std
        yield name, (t.float() + noise).to(t.dtype)
