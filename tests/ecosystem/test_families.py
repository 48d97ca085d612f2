"""The family registry and the classifier family: spaces, building, prediction and both scoring paths."""

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from ecosystem.families import FAMILIES, Family, FlatScoring, UnknownFamily, get_family, register_family
from m2n2 import digits
from m2n2.checkpoint import StateDictSource
from m2n2.errors import IncompatibleModels

DIGITS = {"layers": [64, 256, 10]}
DEEP = {"layers": [5, 7, 6, 3]}  # three linear layers, three classes (padding to 16 columns)


@pytest.fixture(scope="module")
def classifier() -> Family:
    return get_family("classifier")


@pytest.fixture(scope="module")
def data() -> digits.DigitsSplit:
    return digits.load_split()


@pytest.fixture(scope="module")
def specialist(data: digits.DigitsSplit) -> torch.Tensor:
    return digits.train_specialists(data, digits.mlp_space())[0]


def random_points(layers: list[int], n: int, seed: int) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, layers[0], generator=g) * 3
    y = torch.randint(0, layers[-1], (n,), generator=g)
    return x.tolist(), y.tolist()


def test_registry_holds_classifier_and_it_follows_the_protocols(classifier: Family) -> None:
    assert FAMILIES["classifier"] is classifier
    assert isinstance(classifier, Family) and isinstance(classifier, FlatScoring)
    assert classifier.scoring_rules == ("accuracy", "likelihood")


def test_duplicate_registration_raises_and_keeps_the_original(classifier: Family) -> None:
    with pytest.raises(ValueError, match="'classifier' is already registered"):

        @register_family
        class Impostor:
            name = "classifier"

    assert FAMILIES["classifier"] is classifier


def test_unknown_family_lists_the_available_ones() -> None:
    with pytest.raises(UnknownFamily, match=r"unknown model family 'cnn'; available: .*classifier") as e:
        get_family("cnn")
    assert isinstance(e.value, ValueError) and "classifier" in e.value.available


def test_classifier_space_is_the_digits_space(classifier: Family) -> None:
    space, reference = classifier.space(DIGITS), digits.mlp_space()
    assert space == reference and space.dim == 19_210
    assert [s.dtype for s in space] == [s.dtype for s in reference]


@pytest.mark.parametrize("config", [DIGITS, DEEP, {"layers": [4, 2]}])
def test_space_matches_the_built_module(classifier: Family, config: dict) -> None:
    space = classifier.space(config)
    module = classifier.build(config, StateDictSource(space.unflatten(torch.randn(space.dim))))
    assert space == type(space).from_state_dict(module.state_dict())
    assert not module.training and not any(p.requires_grad for p in module.parameters())


def test_built_specialist_predicts_as_the_flat_scorer_scores(
    classifier: Family, data: digits.DigitsSplit, specialist: torch.Tensor
) -> None:
    module = classifier.build(DIGITS, StateDictSource(digits.mlp_space().unflatten(specialist)))
    predictions = classifier.predict(module, DIGITS, data.x_test.tolist())
    labels = torch.tensor([p["label"] for p in predictions])
    expected = digits.FlatMLPScorer(data.x_test, data.y_test, digits.mlp_space())(specialist)
    assert torch.equal((labels == data.y_test).float(), expected)
    assert all(len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-5 for p in predictions)


@pytest.mark.parametrize("rule", ["accuracy", "likelihood"])
@pytest.mark.parametrize("config", [DIGITS, DEEP])
def test_flat_scorer_equals_module_scoring(classifier: Family, config: dict, rule: str) -> None:
    inputs, targets = random_points(config["layers"], 200, seed=1)
    space = classifier.space(config)
    scorer = classifier.flat_scorer(config, inputs, targets, rule)
    for seed in range(3):
        flat = torch.randn(space.dim, generator=torch.Generator().manual_seed(seed)) * 0.3
        module_scores = classifier.score(
            classifier.build(config, StateDictSource(space.unflatten(flat))), {}, inputs, targets, rule
        )
        flat_scores = scorer(flat)
        assert flat_scores.shape == module_scores.shape == (200,)
        torch.testing.assert_close(flat_scores, module_scores, rtol=1e-5, atol=1e-6)
        assert ((flat_scores >= 0) & (flat_scores <= 1)).all()


def test_likelihood_is_a_probability_and_bounds_accuracy(
    classifier: Family, data: digits.DigitsSplit, specialist: torch.Tensor
) -> None:
    module = classifier.build(DIGITS, StateDictSource(digits.mlp_space().unflatten(specialist)))
    inputs, targets = data.x_test.tolist(), data.y_test.tolist()
    likelihood = classifier.score(module, {}, inputs, targets, "likelihood")
    accuracy = classifier.score(module, {}, inputs, targets, "accuracy")
    assert ((likelihood >= 0) & (likelihood <= 1)).all()
    assert set(accuracy.tolist()) <= {0.0, 1.0}
    assert (likelihood[accuracy == 0] <= 0.5 + 1e-6).all()  # a wrong argmax cannot hold a majority


def test_empty_batches(classifier: Family) -> None:
    module = classifier.build(
        DEEP, StateDictSource(classifier.space(DEEP).unflatten(torch.zeros(classifier.space(DEEP).dim)))
    )
    assert classifier.predict(module, DIGITS, []) == []
    assert classifier.score(module, {}, [], [], "accuracy").shape == (0,)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ([64, 10], "config:"),
        ({}, "config.layers:"),
        ({"layers": [64]}, "config.layers:"),
        ({"layers": "64,10"}, "config.layers:"),
        ({"layers": [64, 0, 10]}, r"config.layers\[1\]"),
        ({"layers": [64, 2.5]}, r"config.layers\[1\]"),
        ({"layers": [True, 10]}, r"config.layers\[0\]"),
        ({"layers": [64, 10], "layer": [1]}, "config.layer:"),
    ],
)
def test_invalid_config_names_the_field(classifier: Family, config: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        classifier.validate_config(config)
    with pytest.raises(ValueError, match=field):
        classifier.space(config)


def test_validate_config_normalises(classifier: Family) -> None:
    assert classifier.validate_config({"layers": (64, 256, 10)}) == DIGITS


@pytest.mark.parametrize(
    ("inputs", "target", "field"),
    [
        ([0.0] * 4, 0, "inputs: expected a list of 5 numbers, got 4 values"),
        ("12345", 0, "inputs: expected a list of 5 numbers"),
        ([0.0, 1, "x", 0, 0], 0, r"inputs\[2\]: expected a finite number"),
        ([0.0, 1, float("nan"), 0, 0], 0, r"inputs\[2\]"),
        ([0.0] * 5, 3, r"target: expected an integer label in \[0, 3\), got 3"),
        ([0.0] * 5, -1, "target:"),
        ([0.0] * 5, 1.0, "target:"),
        ([0.0] * 5, True, "target:"),
    ],
)
def test_invalid_point_names_the_field(classifier: Family, inputs: object, target: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        classifier.validate_point(DEEP, inputs, target)


def test_valid_point_passes(classifier: Family) -> None:
    classifier.validate_point(DEEP, [0, 1.5, -2, 3, 4], 2)


def test_scoring_refuses_bad_rules_and_batches(classifier: Family) -> None:
    space = classifier.space(DEEP)
    module = classifier.build(DEEP, StateDictSource(space.unflatten(torch.zeros(space.dim))))
    inputs, targets = random_points(DEEP["layers"], 4, seed=0)
    with pytest.raises(ValueError, match="rule: unknown scoring rule 'f1'; available: accuracy, likelihood"):
        classifier.score(module, {}, inputs, targets, "f1")
    with pytest.raises(ValueError, match="rule:"):
        classifier.flat_scorer(DEEP, inputs, targets, "f1")
    with pytest.raises(ValueError, match="targets: expected 4 labels"):
        classifier.score(module, {}, inputs, targets[:3], "accuracy")
    with pytest.raises(ValueError, match=r"targets\[0\]"):
        classifier.score(module, {}, inputs, [7, *targets[1:]], "accuracy")
    with pytest.raises(ValueError, match=r"inputs\[1\]"):
        classifier.predict(module, DIGITS, [inputs[0], inputs[1][:2]])


def test_build_refuses_a_state_dict_of_another_layout(classifier: Family) -> None:
    state = classifier.space(DEEP).unflatten(torch.zeros(classifier.space(DEEP).dim))
    with pytest.raises(IncompatibleModels, match=r"'fc1.weight' has shape"):
        classifier.build({"layers": [6, 7, 6, 3]}, StateDictSource(state))
    with pytest.raises(IncompatibleModels, match=r"missing tensor 'fc3.bias'"):
        classifier.build(DEEP, StateDictSource({k: v for k, v in state.items() if k != "fc3.bias"}))
    with pytest.raises(IncompatibleModels, match=r"unexpected tensor 'extra'"):
        classifier.build(DEEP, StateDictSource({**state, "extra": torch.zeros(1)}))


@pytest.mark.parametrize("feature", ["1.5", True, 1e39, float("nan")])
def test_predict_inputs_are_finite_float32_numbers(classifier: Family, feature) -> None:
    inputs = TypeAdapter(list[classifier.predict_input])
    assert inputs.validate_python([[0, 1.5, -3]]) == [[0.0, 1.5, -3.0]]
    with pytest.raises(ValidationError):
        inputs.validate_python([[0, feature, 1]])
    with pytest.raises(ValueError, match="inputs\\[1\\]"):
        classifier.validate_point(DEEP, [0, feature, 1, 2, 3], 0)
