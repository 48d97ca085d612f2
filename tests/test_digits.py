"""The digits setting in both parameter layouts: the fast scorer agrees with the plain forward pass."""

import pytest
import torch

from m2n2 import digits


@pytest.fixture(scope="module")
def data() -> digits.DigitsSplit:
    return digits.load_split()


def test_split_sizes_follow_the_paper(data: digits.DigitsSplit) -> None:
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)


@pytest.mark.parametrize("layout", digits.LAYOUTS)
def test_fast_scorer_equals_the_forward_pass(data: digits.DigitsSplit, layout: str) -> None:
    space = digits.mlp_space(layout=layout)
    assert space.dim == 19_210
    flat = digits.random_init(space, torch.Generator().manual_seed(3)) * 30  # large enough to be decisive
    logits = digits.mlp_logits(flat, data.x_train, space)
    expected = (logits.argmax(dim=1) == data.y_train).float()
    assert torch.equal(digits.FlatMLPScorer(data.x_train, data.y_train, space)(flat), expected)
    likelihood = digits.FlatMLPScorer(data.x_train, data.y_train, space, rule="likelihood")(flat)
    torch.testing.assert_close(likelihood, logits.softmax(dim=1)[torch.arange(len(logits)), data.y_train])


def test_reference_layout_is_input_major() -> None:
    """The paper's code lays W1 out as (inputs, hidden): the first 256 entries all leave input pixel 0."""
    space = digits.mlp_space(layout="reference")
    assert space.signature() == (("w1", (64, 256)), ("b1", (256,)), ("w2", (256, 10)), ("b2", (10,)))
    x = torch.zeros(1, 64)
    x[0, 0] = 1.0
    flat = torch.zeros(space.dim)
    flat[:256] = 1.0  # every weight out of input 0
    flat[16640:19200] = torch.eye(256, 10).reshape(-1)  # hidden unit k feeds class k
    assert digits.mlp_logits(flat, x, space)[0].tolist() == [1.0] * 10


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown layout 'tf'"):
        digits.mlp_space(layout="tf")


@pytest.mark.parametrize("layout", digits.LAYOUTS)
def test_specialists_learn_their_half(data: digits.DigitsSplit, layout: str) -> None:
    space = digits.mlp_space(layout=layout)
    low, high = digits.train_specialists(data, space)
    is_low = data.y_test < 5
    correct_low = digits.FlatMLPScorer(data.x_test, data.y_test, space)(low)
    correct_high = digits.FlatMLPScorer(data.x_test, data.y_test, space)(high)
    assert correct_low[is_low].mean() > 0.7 and correct_high[~is_low].mean() > 0.7
    assert correct_low[~is_low].mean() < 0.1 and correct_high[is_low].mean() < 0.1
