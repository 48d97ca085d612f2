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


@pytest.mark.parametrize(
    ("layout", "init"), [(layout, "shared") for layout in digits.LAYOUTS] + [("reference", "separate")]
)
def test_specialists_learn_their_half(data: digits.DigitsSplit, layout: str, init: str) -> None:
    space = digits.mlp_space(layout=layout)
    low, high = digits.train_specialists(data, space, init=init)
    is_low = data.y_test < 5
    correct_low = digits.FlatMLPScorer(data.x_test, data.y_test, space)(low)
    correct_high = digits.FlatMLPScorer(data.x_test, data.y_test, space)(high)
    assert correct_low[is_low].mean() > 0.7 and correct_high[~is_low].mean() > 0.7
    assert correct_low[~is_low].mean() < 0.1 and correct_high[is_low].mean() < 0.1


def test_separate_inits_are_two_draws_and_shared_is_one() -> None:
    space = digits.mlp_space()
    a, b = digits.specialist_inits(space, seed=7, init="separate")
    assert not torch.equal(a, b)
    assert 0.009 < float(a.std()) < 0.011 and 0.009 < float(b.std()) < 0.011  # each ~ N(0, 0.01^2)
    assert abs(float(torch.nn.functional.cosine_similarity(a, b, dim=0))) < 0.05  # independent: nearly orthogonal
    shared = digits.specialist_inits(space, seed=7, init="shared")
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[0], digits.shared_init(space, 7))
    assert torch.equal(
        digits.specialist_inits(space, seed=8, init="separate")[0], digits.specialist_inits(space, 8, "separate")[0]
    )
    assert not torch.equal(digits.specialist_inits(space, seed=8, init="separate")[0], a)
    with pytest.raises(ValueError, match="unknown specialist init 'twin'"):
        digits.specialist_inits(space, init="twin")


def test_default_specialists_still_share_one_init(data: digits.DigitsSplit) -> None:
    """The ecosystem's demo relies on the default: one shared init, as before separate inits existed."""
    space = digits.mlp_space()
    default, shared = digits.train_specialists(data, space), digits.train_specialists(data, space, init="shared")
    assert all(torch.equal(x, y) for x, y in zip(default, shared, strict=True))
    separate = digits.train_specialists(data, space, init="separate")
    assert torch.equal(separate[0], default[0]) and not torch.equal(separate[1], default[1])  # the first draw is shared
