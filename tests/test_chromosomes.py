"""Chromosome spaces: one (split point, mixing ratio) pair of the loop encodes each chromosome's own pair."""

import pytest
import torch

from m2n2.crossover import chromosome_genes, chromosome_slerp_tensors, split_range
from m2n2.errors import IncompatibleModels
from m2n2.space import ChromosomeSpace

TENSORS = [("a", (3,), torch.float32), ("b", (4,), torch.float32), ("c", (2,), torch.float32)]


def test_places_count_only_the_tensors_of_the_same_chromosome() -> None:
    space = ChromosomeSpace(TENSORS, [1, 0, 1])
    assert space.sizes == (4, 5)
    assert space.place == {"a": (1, 0), "b": (0, 0), "c": (1, 3)}
    assert split_range(space) == 20
    with pytest.raises(IncompatibleModels, match="chromosome 1 holds no parameters"):
        ChromosomeSpace(TENSORS, [0, 0, 2])
    huge = ChromosomeSpace([("x", (2**32,), torch.float32), ("y", (2**32,), torch.float32)], [0, 1])
    with pytest.raises(IncompatibleModels, match="2\\*\\*63"):
        split_range(huge)


def test_genes_decode_every_split_pair_once_and_no_split_past_the_range() -> None:
    sizes = (4, 5)
    pairs = {tuple(s for s, _ in chromosome_genes(split, 0.5, sizes)) for split in range(20)}
    assert pairs == {(i, j) for i in range(4) for j in range(5)}
    assert [s for s, _ in chromosome_genes(20, 0.5, sizes)] == [4, 5], "the loop's 'no split' keeps whole chromosomes"
    ratios = [r for _, r in chromosome_genes(0, 0.75 + 0.25 / 4096, sizes)]
    assert ratios == [0.75, 0.25]


def test_a_ratio_of_zero_and_no_split_gives_parent_b_in_each_chromosome() -> None:
    space = ChromosomeSpace(TENSORS, [1, 0, 1])
    a = {n: torch.ones(shape) for n, shape, _ in TENSORS}
    b = {n: torch.arange(1.0, 1 + shape[0]) for n, shape, _ in TENSORS}

    class Source(dict):
        def get(self, name):  # the TensorSource protocol: tensors by name
            return self[name]

    # Split at 0 in both chromosomes: every element takes 1 - ratio = 1 (parent B) there.
    child = dict(chromosome_slerp_tensors(Source(a), Source(b), space, 0.0, 0, cosines=(0.5, 0.5)))
    for name in b:
        torch.testing.assert_close(child[name], b[name])
