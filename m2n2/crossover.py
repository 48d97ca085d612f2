"""Split-point SLERP crossover and Gaussian mutation (M2N2, arXiv 2508.16204, Sec. 3).

The child takes mixing ratio t = w_m on global indices before the split point and
t = 1 - w_m from it on, and lies on the SLERP arc between its parents:

    child = sin((1 - t) Omega) / sin(Omega) * A + sin(t Omega) / sin(Omega) * B

with one global angle Omega between the *whole* parameter vectors, as the
reference code computes it. When sin(Omega) is tiny the arc is a line, so we
fall back to linear interpolation.

A ``ChromosomeSpace`` (the paper's diffusion setting: attention parameters apart from the rest)
crosses each chromosome over on its own: its own split point, mixing ratio and angle. The loop's one
(split point, mixing ratio) pair encodes them all (``chromosome_genes``), so a lineage row still holds
the whole recipe.
"""

import math
from collections.abc import Iterator, Sequence

import torch

from m2n2.checkpoint import TensorSource
from m2n2.errors import IncompatibleModels
from m2n2.space import ChromosomeSpace, ParamSpace

# Below this sin(Omega) the parents are (anti)parallel and SLERP's weights blow up;
# the reference code switches to linear interpolation at the same threshold.
SIN_EPS = 1e-6
DOT_CHUNK = 1 << 16  # elements per float32 dot of the angle pass (summed in float64)
# Each chromosome but the last takes this many levels of the mixing ratio draw (a float32 has 24 bits).
RATIO_LEVELS = 1 << 12
MAX_SPLIT_RANGE = 1 << 63  # split points are stored as signed 64-bit integers


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
        d, na2, nb2 = dots(ta, tb)
        dot, norm_a2, norm_b2 = dot + d, norm_a2 + na2, norm_b2 + nb2
        del ta, tb
    return _cosine(dot, norm_a2, norm_b2)


def dots(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """a.b, a.a and b.b of two flat float32 vectors, without a float64 copy of either.

    Float32 dots over DOT_CHUNK-long pieces summed in float64: a float32 sum over a whole embedding
    matrix loses digits. The pieces are one batched product each, not a loop of small dots: each call
    starts the thread pool, which on a busy machine waits for a descheduled thread every time.
    """
    rows = a.numel() // DOT_CHUNK
    whole, tail = rows * DOT_CHUNK, (a[rows * DOT_CHUNK :], b[rows * DOT_CHUNK :])
    pa, pb = a[:whole].view(rows, 1, DOT_CHUNK), b[:whole].view(rows, 1, DOT_CHUNK)
    pieces = [torch.bmm(x, y.transpose(1, 2)).reshape(rows) for x, y in ((pa, pb), (pa, pa), (pb, pb))]
    ends = [torch.dot(x, y).reshape(1) for x, y in ((tail[0], tail[1]), (tail[0], tail[0]), (tail[1], tail[1]))]
    sums = torch.stack([torch.cat([p, e]).double().sum() for p, e in zip(pieces, ends, strict=True)])  # (3,)
    dot, norm_a2, norm_b2 = sums.tolist()
    return dot, norm_a2, norm_b2


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos of the angle between two flat float32 vectors (1 when either is zero: it has no direction)."""
    return _cosine(*dots(a, b))


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
        yield spec.name, _cross(ta, tb, cut, before, after).view(spec.shape).to(spec.dtype)


def _cross(
    ta: torch.Tensor, tb: torch.Tensor, cut: int, before: tuple[float, float], after: tuple[float, float]
) -> torch.Tensor:
    """One flat tensor of the child: weights ``before`` on elements [0, cut), ``after`` from ``cut`` on."""
    child = torch.empty_like(ta)
    for lo, hi, (wa, wb) in ((0, cut, before), (cut, ta.numel(), after)):
        if hi > lo:
            torch.mul(ta[lo:hi], wa, out=child[lo:hi]).add_(tb[lo:hi], alpha=wb)
    return child


def split_range(space: ParamSpace) -> int:
    """How many split points the loop draws from: the product of the chromosomes' sizes (one: ``dim``)."""
    if not isinstance(space, ChromosomeSpace):
        return space.dim
    total = math.prod(space.sizes)
    if total >= MAX_SPLIT_RANGE:
        raise IncompatibleModels(f"chromosomes of sizes {list(space.sizes)} need split points past 2**63")
    return total


def chromosome_genes(split_point: int, mixing_ratio: float, sizes: Sequence[int]) -> list[tuple[int, float]]:
    """Each chromosome's (split point, mixing ratio), decoded from the loop's one pair.

    The split point is a mixed-radix number over the chromosomes' sizes (at or past their product: no
    split in any); the mixing ratio's first 12 bits give the first chromosome's ratio, the next 12 the
    second's, and so on (the last takes what remains). Each decoded value is uniform when the pair is.
    """
    total = math.prod(sizes)
    if split_point >= total:
        splits = list(sizes)
    else:
        splits, rest = [], split_point
        for size in reversed(sizes):
            splits.append(rest % size)
            rest //= size
        splits.reverse()
    ratios, rest_ratio = [], mixing_ratio
    for k in range(len(sizes)):
        if k == len(sizes) - 1:
            ratios.append(rest_ratio)
        else:
            scaled = rest_ratio * RATIO_LEVELS
            ratios.append(math.floor(scaled) / RATIO_LEVELS)
            rest_ratio = scaled - math.floor(scaled)
    return list(zip(splits, ratios, strict=True))


def chromosome_cosines(a: TensorSource, b: TensorSource, space: ChromosomeSpace) -> tuple[float, ...]:
    """cos(Omega) of each chromosome between two models: one pass over both, a tensor of each at a time."""
    sums = [[0.0, 0.0, 0.0] for _ in space.sizes]  # dot, |a|^2, |b|^2 per chromosome
    for spec in space:
        ta, tb = _pair(a, b, spec.name)
        acc = sums[space.place[spec.name][0]]
        for ca, cb in zip(ta.split(DOT_CHUNK), tb.split(DOT_CHUNK), strict=True):
            acc[0] += torch.dot(ca, cb).item()
            acc[1] += torch.dot(ca, ca).item()
            acc[2] += torch.dot(cb, cb).item()
        del ta, tb
    return tuple(_cosine(*acc) for acc in sums)


def chromosome_slerp_tensors(
    a: TensorSource,
    b: TensorSource,
    space: ChromosomeSpace,
    mixing_ratio: float,
    split_point: int,
    cosines: Sequence[float] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """``split_slerp_tensors`` for a chromosome space: each chromosome crossed over with its own genes and angle."""
    cos = chromosome_cosines(a, b, space) if cosines is None else tuple(cosines)
    genes = chromosome_genes(split_point, mixing_ratio, space.sizes)
    weights = [
        (slerp_weights(c, ratio), slerp_weights(c, 1.0 - ratio)) for c, (_, ratio) in zip(cos, genes, strict=True)
    ]
    for spec in space:
        k, offset = space.place[spec.name]
        ta, tb = _pair(a, b, spec.name)
        cut = min(max(genes[k][0] - offset, 0), spec.numel)
        yield spec.name, _cross(ta, tb, cut, *weights[k]).view(spec.shape).to(spec.dtype)


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
