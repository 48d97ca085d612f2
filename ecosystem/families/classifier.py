"""The ``classifier`` family: a torch MLP over feature vectors (the digits demo is ``[64, 256, 10]``)."""

import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, BaseModel, Field
from torch import nn

from ecosystem.errors import RegistrationRefused
from ecosystem.families.registry import register_family
from m2n2.checkpoint import TensorSource, iter_tensors, write_safetensors
from m2n2.digits import SCORING_RULES, FlatMLPScorer
from m2n2.space import ParamSpace

WEIGHTS = "model.safetensors"  # the file a checkpoint directory of this family holds
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # the model computes in float32: larger numbers become inf


def _in_float32_range(x: float) -> float:
    """Refuse what float32 would turn into inf (and the answer into NaN)."""
    if abs(x) > FLOAT32_MAX:
        raise ValueError(f"{x:g} is outside float32's range (the model computes in float32)")
    return x


# Numbers only: strict, so "1.5" and true are refused rather than coerced (feedback refuses them too).
Feature = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_in_float32_range)]
Features = Annotated[
    list[Feature],
    Field(min_length=1, description="one feature vector: layers[0] finite numbers (64 for the digits demo)"),
]


class Prediction(BaseModel):
    """The classifier's answer for one input."""

    label: int = Field(description="the most probable class")
    probabilities: list[float] = Field(description="softmax probability of each class")


class MLPClassifier(nn.Module):
    """Linear layers ``fc1 .. fcK`` with ReLU between them; state dict order is the canonical order."""

    def __init__(self, layers: list[int]) -> None:
        super().__init__()
        self.layers = list(layers)
        for i, (n_in, n_out) in enumerate(itertools.pairwise(layers), start=1):
            setattr(self, f"fc{i}", nn.Linear(n_in, n_out))  # named like digits.MLP so its weights load 1:1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = len(self.layers) - 1
        for i in range(1, depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < depth:
                x = x.relu()
        return x  # (n, n_classes) logits


@register_family
class Classifier:
    """Config ``{"layers": [n_inputs, *hidden, n_classes]}``; inputs are feature lists, targets labels."""

    name = "classifier"
    scoring_rules: tuple[str, ...] = SCORING_RULES
    api = "predict"
    predict_input = Features
    predict_output = Prediction

    def create_config(self, options: Mapping[str, Any], root: Path) -> dict[str, Any]:
        """``{"layers": [...]}`` from ``m2n2 init --layers``; nothing to copy."""
        return self.validate_config({"layers": options.get("layers")})

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``{"layers": [...]}`` with at least two positive ints; unknown keys are refused (typos)."""
        if not isinstance(config, Mapping):
            raise ValueError(f"config: expected an object like {{'layers': [64, 256, 10]}}, got {config!r}")
        extra = sorted(set(config) - {"layers"})
        if extra:
            raise ValueError(f"config.{extra[0]}: unknown field; the classifier config has only 'layers'")
        layers = config.get("layers")
        if not isinstance(layers, list | tuple) or len(layers) < 2:
            raise ValueError(f"config.layers: expected a list of at least 2 layer sizes, got {layers!r}")
        for i, n in enumerate(layers):
            if not _is_int(n) or n < 1:
                raise ValueError(f"config.layers[{i}]: expected a positive integer, got {n!r}")
        return {"layers": [int(n) for n in layers]}

    def validate_point(self, config: Mapping[str, Any], inputs: Any, target: Any) -> None:
        """``inputs`` is ``layers[0]`` finite numbers, ``target`` an int label in ``[0, layers[-1])``."""
        layers = self.validate_config(config)["layers"]
        _check_features(inputs, layers[0], "inputs")
        _check_label(target, layers[-1], "target")

    def space(self, config: Mapping[str, Any]) -> ParamSpace:
        """``fc1.weight, fc1.bias, fc2.weight, ...`` (float32), the same as ``digits.mlp_space()`` for 64-256-10."""
        layers = self.validate_config(config)["layers"]
        tensors = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(layers), start=1):
            tensors += [(f"fc{i}.weight", (n_out, n_in), torch.float32), (f"fc{i}.bias", (n_out,), torch.float32)]
        return ParamSpace(tensors)

    def weight_files(self, config: Mapping[str, Any], directory: Path) -> list[Path]:
        """A directory holds one ``model.safetensors``."""
        path = directory / WEIGHTS
        if not path.is_file():
            raise RegistrationRefused(f"{directory.name}: no {WEIGHTS} in the directory")
        return [path]

    def build(self, config: Mapping[str, Any], source: TensorSource, device: str = "cpu") -> nn.Module:
        """An eval-mode ``MLPClassifier`` holding the source's tensors (it may share memory with them)."""
        space = self.space(config)
        space.check_compatible(source.space, "model")
        tensors = {spec.name: source.get(spec.name).detach().to(device, spec.dtype) for spec in space}
        with torch.device("meta"):  # skip the random init: every parameter is replaced next
            module = MLPClassifier(self.validate_config(config)["layers"])
        module.load_state_dict(tensors, assign=True)
        return module.requires_grad_(False).eval()

    def export(self, config: Mapping[str, Any], source: TensorSource, directory: Path) -> list[Path]:
        """``model.safetensors`` in the ecosystem's tensor order (load it with ``safetensors.torch.load_file``)."""
        directory.mkdir(parents=True, exist_ok=True)
        space = self.space(config)
        return [write_safetensors(directory / WEIGHTS, space, iter_tensors(source, space))]

    def smoke_inputs(self, config: Mapping[str, Any]) -> list:
        """One all-zero feature vector."""
        return [[0.0] * self.validate_config(config)["layers"][0]]

    def predict(self, module: nn.Module, config: Mapping[str, Any], inputs: list) -> list[dict[str, Any]]:
        """``[{"label": int, "probabilities": [float, ...]}]``, one per input."""
        device = next(module.parameters()).device
        with torch.inference_mode():
            probs = module(_features(inputs, module.layers[0]).to(device)).softmax(dim=1).cpu()  # (n, n_classes)
        return [{"label": int(p.argmax()), "probabilities": p.tolist()} for p in probs]

    def score(
        self, module: nn.Module, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> torch.Tensor:
        """``accuracy``: 1 when the argmax is the label; ``likelihood``: softmax probability of the label."""
        _check_rule(rule)
        x, y = _batch(inputs, targets, module.layers[0], module.layers[-1])
        with torch.inference_mode():
            logits = module(x.to(next(module.parameters()).device)).cpu()  # (n, n_classes)
        if rule == "likelihood":
            return logits.softmax(dim=1).gather(1, y.unsqueeze(1)).squeeze(1)  # (n,)
        return (logits.argmax(dim=1) == y).float()  # (n,)

    def flat_scorer(
        self, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Scores of a flat vector (dim,) without building a module: ``digits.FlatMLPScorer`` generalised."""
        _check_rule(rule)
        layers = self.validate_config(config)["layers"]
        x, y = _batch(inputs, targets, layers[0], layers[-1])
        return FlatMLPScorer(x, y, self.space(config), rule)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # bool is an int subclass; True is not a size


def _check_rule(rule: str) -> None:
    if rule not in SCORING_RULES:
        raise ValueError(f"rule: unknown scoring rule {rule!r}; available: {', '.join(SCORING_RULES)}")


def _check_features(v: Any, width: int, field: str) -> None:
    if not isinstance(v, list | tuple) or len(v) != width:
        got = f"{len(v)} values" if isinstance(v, list | tuple) else repr(v)
        raise ValueError(f"{field}: expected a list of {width} numbers, got {got}")
    for i, x in enumerate(v):
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise ValueError(f"{field}[{i}]: expected a finite number, got {x!r}")
        if abs(x) > FLOAT32_MAX:
            raise ValueError(f"{field}[{i}]: {x:g} is outside float32's range (the model computes in float32)")


def _check_label(v: Any, n_classes: int, field: str) -> None:
    if not _is_int(v) or not 0 <= v < n_classes:
        raise ValueError(f"{field}: expected an integer label in [0, {n_classes}), got {v!r}")


def _features(inputs: list, width: int) -> torch.Tensor:
    """A (n, width) float32 batch; ``ValueError`` naming the first bad input."""
    if not isinstance(inputs, list | tuple):
        raise ValueError(f"inputs: expected a list of feature lists, got {type(inputs).__name__}")
    for i, row in enumerate(inputs):
        _check_features(row, width, f"inputs[{i}]")
    return torch.tensor(inputs, dtype=torch.float32).reshape(len(inputs), width)  # reshape: keeps (0, width)


def _batch(inputs: list, targets: list, width: int, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = _features(inputs, width)  # (n, width)
    if not isinstance(targets, list | tuple) or len(targets) != len(x):
        got = len(targets) if isinstance(targets, list | tuple) else repr(targets)
        raise ValueError(f"targets: expected {len(x)} labels (one per input), got {got}")
    for i, t in enumerate(targets):
        _check_label(t, n_classes, f"targets[{i}]")
    return x, torch.tensor(list(targets), dtype=torch.int64)  # (n, width), (n,)
