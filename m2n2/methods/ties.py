"""TIES merging: trim, elect sign, disjoint merge.

Yadav et al. 2023, "TIES-Merging", https://arxiv.org/abs/2306.01708. Trimming is per
tensor (as in mergekit), not over the whole flattened model as in the paper's code.
``trim`` and ``disjoint_mean`` are shared with DARE's ``combine="ties"``.
"""

import torch

from m2n2.methods.registry import InvalidMergeParameter, merge_method
from m2n2.methods.task_arithmetic import check_scale, task_vectors

# ``kth_largest`` selects directly below SELECT_DIRECT entries; above, it brackets the answer between
# quantiles of a SAMPLE-entry strided sample, MARGIN either side (about 5 sampling standard deviations).
SELECT_DIRECT = 1 << 20
SAMPLE = 1 << 16
MARGIN = 0.01


def check_density(density: float, method: str) -> None:
    """Raise ``InvalidMergeParameter`` unless ``density`` is in (0, 1]."""
    if not 0.0 < density <= 1.0:
        raise InvalidMergeParameter(f"{method}: density must be in (0, 1], got {density!r}")


def trim(tvs: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries of each task vector (at least one).

    Entries whose magnitude equals the k-th largest are kept in position order (what a stable sort
    keeps), so the kept set never depends on the backend.
    """
    flat = tvs.reshape(tvs.shape[0], -1)  # (n_models, numel)
    k = max(1, round(density * flat.shape[1]))
    if k >= flat.shape[1]:
        return tvs
    out = torch.empty_like(flat)
    for row, vector in enumerate(flat):
        magnitude = vector.abs()  # (numel,)
        threshold = kth_largest(magnitude, k)
        keep = magnitude >= threshold
        surplus = (
            int(torch.count_nonzero(keep)) - k
        )  # entries tied with the k-th largest beyond the k: drop the last ones
        if surplus:
            keep[(magnitude == threshold).nonzero().squeeze(1)[-surplus:]] = False
        torch.mul(vector, keep, out=out[row])
    return out.reshape(tvs.shape)


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The exact k-th largest of a flat tensor, without sorting or selecting over all of it.

    A strided sample's quantiles bracket the answer; counting the entries above the bracket and
    selecting among the few inside it is a handful of vectorised passes, where a full selection is
    one slow serial pass and a sort slower still. Should the bracket miss, the full selection answers.
    """
    n = values.numel()
    if n > SELECT_DIRECT:
        sample = values[:: n // SAMPLE].float()  # (about SAMPLE,)
        q = 1.0 - k / n
        lo, hi = torch.quantile(sample, torch.tensor([max(0.0, q - MARGIN), min(1.0, q + MARGIN)]))
        above = int(torch.count_nonzero(values > hi))  # counting a bool tensor's sum converts it first
        if above < k:
            inside = values[(values >= lo).logical_and_(values <= hi)]  # (a few percent of n,)
            if above + inside.numel() >= k:
                return inside.kthvalue(inside.numel() - (k - above) + 1).values
    return values.kthvalue(n - k + 1).values


def disjoint_mean(tvs: torch.Tensor) -> torch.Tensor:
    """Elect each entry's sign by summed mass, then average the entries that agree with it.

    An entry x agrees with the elected sign e exactly when x * e > 0, so max(x * e, 0) is |x| where
    it agrees and 0 elsewhere: summed and multiplied by e it is the sum of the agreeing entries, its
    sign is their count. Everything happens in place on two fresh tensors, no boolean masks.
    """
    # A zero sum elects +, as mergekit does (sign 0 + 0.5 has sign +1); entries that are exactly zero never vote.
    elected = tvs.sum(0).sign_().add_(0.5).sign_()  # (*shape), each +1 or -1
    agreeing = (tvs * elected).clamp_(min=0)  # (n_models, *shape)
    total = agreeing.sum(0)
    count = agreeing.sign_().sum(0).clamp_(min=1)
    return total.mul_(elected).div_(count)


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
    return torch.add(base.float(), disjoint_mean(trim(tvs, density)), alpha=scale)
