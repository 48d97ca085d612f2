"""The paper's digits setting: sklearn ``load_digits``, an MLP 64-256-10, two specialists.

The split follows the reference code: the first 80% of the 1,797 images (1,437)
train, the last 20% (360) test. Pixels stay raw (0..16), as there.
"""

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from m2n2.errors import ShapeMismatch
from m2n2.space import ParamSpace, TensorSpec

INIT_STD = 0.01  # reference code: every parameter ~ N(0, 0.01^2)


@dataclass(frozen=True)
class DigitsSplit:
    x_train: torch.Tensor  # (1437, 64) float32
    y_train: torch.Tensor  # (1437,) int64
    x_test: torch.Tensor  # (360, 64) float32
    y_test: torch.Tensor  # (360,) int64


def load_split(train_fraction: float = 0.8) -> DigitsSplit:
    """The digits data, split by position (no shuffling), as in the paper."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)
    n = int(len(x) * train_fraction)
    return DigitsSplit(x[:n].contiguous(), y[:n], x[n:].contiguous(), y[n:])


class MLP(nn.Module):
    """Two-layer perceptron; its state dict order is the canonical parameter order."""

    def __init__(self, n_inputs: int = 64, n_hidden: int = 256, n_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_inputs, n_hidden)
        self.fc2 = nn.Linear(n_hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


# "torch": nn.Linear's state-dict order, fcK.weight of shape (out, in): a split point inside a
# weight separates hidden units. "reference": the paper's code, wK of shape (in, out), input-major:
# a split point separates input features. The ecosystem's classifier family uses "torch".
LAYOUTS = ("torch", "reference")


def mlp_space(n_inputs: int = 64, n_hidden: int = 256, n_classes: int = 10, layout: str = "torch") -> ParamSpace:
    """The flat layout of the MLP (19,210 parameters for digits) in one of ``LAYOUTS``."""
    if layout == "torch":
        return ParamSpace.from_state_dict(MLP(n_inputs, n_hidden, n_classes).state_dict())
    if layout == "reference":
        sizes = (n_inputs, n_hidden, n_classes)
        tensors = []
        for k, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
            tensors += [(f"w{k}", (n_in, n_out), torch.float32), (f"b{k}", (n_out,), torch.float32)]
        return ParamSpace(tensors)
    raise ValueError(f"unknown layout {layout!r}; available: {', '.join(LAYOUTS)}")


def _view(flat: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    return flat[spec.offset : spec.end].view(spec.shape)


def _weight(flat: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    """A layer's weight as (out, in), whichever layout stores it (a view, no copy)."""
    w = _view(flat, spec)
    return w if spec.name.endswith(".weight") else w.t()


def mlp_logits(flat: torch.Tensor, x: torch.Tensor, space: ParamSpace) -> torch.Tensor:
    """Differentiable forward pass of a flat MLP vector, shape (n, n_classes)."""
    specs = space.specs
    hidden = x
    for i in range(0, len(specs), 2):
        hidden = F.linear(hidden, _weight(flat, specs[i]), _view(flat, specs[i + 1]))
        if i + 2 < len(specs):
            hidden = hidden.relu()
    return hidden


SCORING_RULES = ("accuracy", "likelihood")


class FlatMLPScorer:
    """Per-point scores of a flat MLP vector: the evolution fast path.

    ``space`` is any stack of (weight, bias) pairs (ReLU between layers) in either of
    ``LAYOUTS``, as ``mlp_space`` and the classifier family lay it out. ``rule`` is ``accuracy`` (1 = right
    label, the default) or ``likelihood`` (softmax probability of the right label).

    The output layer is padded to a multiple of 16 columns (zero weights, -inf bias): on
    CPU, BLAS runs a (n, 256) x (256, 16) product about three times faster than
    (n, 256) x (256, 10), and the argmax then reads one contiguous block. The -inf columns
    get probability exactly 0 under softmax, so likelihoods are unchanged.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, space: ParamSpace | None = None, rule: str = "accuracy"
    ) -> None:
        if rule not in SCORING_RULES:
            raise ValueError(f"unknown scoring rule {rule!r}; available: {', '.join(SCORING_RULES)}")
        self.x, self.y, self.rule = x.contiguous(), y, rule
        self.space = space or mlp_space(x.shape[1], n_classes=int(y.max()) + 1)
        specs = self.space.specs
        if not specs or len(specs) % 2:
            raise ShapeMismatch(f"an MLP space is (weight, bias) pairs; got {len(specs)} tensors")
        self._layers = [(specs[i], specs[i + 1]) for i in range(0, len(specs), 2)]
        n_hidden, n_classes = self._layers[-2][1].shape[0] if len(self._layers) > 1 else x.shape[1], specs[-1].shape[0]
        padded = -(-n_classes // 16) * 16
        self._out_padded = torch.zeros(n_hidden, padded)  # (n_hidden, padded)
        self._bias_padded = torch.full((padded,), float("-inf"))  # (padded,)

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        hidden = self.x  # (n, n_inputs)
        for w, b in self._layers[:-1]:
            hidden = torch.addmm(_view(flat, b), hidden, _weight(flat, w).t()).relu_()  # (n, n_hidden)
        w_spec, b_spec = self._layers[-1]
        w_out = _weight(flat, w_spec)  # (n_classes, n_hidden)
        n_classes = w_out.shape[0]
        self._out_padded[:, :n_classes].copy_(w_out.t())
        self._bias_padded[:n_classes].copy_(_view(flat, b_spec))
        logits = torch.addmm(self._bias_padded, hidden, self._out_padded)  # (n, padded)
        if self.rule == "likelihood":
            return logits.softmax(dim=1).gather(1, self.y.unsqueeze(1)).squeeze(1)  # (n,)
        return (logits.max(dim=1).indices == self.y).float()  # (n,)


def random_init(space: ParamSpace, generator: torch.Generator) -> torch.Tensor:
    """A flat vector with every parameter ~ N(0, 0.01^2), as in the reference code."""
    return torch.randn(space.dim, generator=generator) * INIT_STD


def train(
    flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, space: ParamSpace, steps: int = 10, lr: float = 3e-3
) -> torch.Tensor:
    """Full-batch Adam on cross-entropy: the paper trains each specialist for 10 steps at lr 3e-3."""
    params = flat.clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(mlp_logits(params, x, space), y).backward()
        opt.step()
    return params.detach()


def shared_init(space: ParamSpace, seed: int = 42) -> torch.Tensor:
    """The one random init both specialists start from under ``init="shared"``."""
    return random_init(space, torch.Generator().manual_seed(seed))


# "separate": each specialist from its own N(0, 0.01^2) draw, as the paper's reference code does
# (the two draw from one generator, one after the other). The two then sit in different basins
# and merging them is hard, which is what separates the paper's ablations (Fig. 2, right).
# "shared": both from one draw; their difference is then a pair of task vectors from a common base
# and nearly any interpolation works. The ecosystem's demo and its tests use "shared".
SPECIALIST_INITS = ("separate", "shared")


def specialist_inits(space: ParamSpace, seed: int = 42, init: str = "shared") -> tuple[torch.Tensor, torch.Tensor]:
    """The starting points of the two specialists for one init ``seed``, under one of ``SPECIALIST_INITS``."""
    if init == "shared":
        start = shared_init(space, seed)
        return start, start
    if init == "separate":
        generator = torch.Generator().manual_seed(seed)
        return random_init(space, generator), random_init(space, generator)
    raise ValueError(f"unknown specialist init {init!r}; available: {', '.join(SPECIALIST_INITS)}")


def train_specialists(
    data: DigitsSplit, space: ParamSpace, seed: int = 42, init: str = "shared"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two specialists, one trained on digits 0-4 and one on digits 5-9, from ``specialist_inits``."""
    start_low, start_high = specialist_inits(space, seed, init)
    low = data.y_train < 5
    return (
        train(start_low, data.x_train[low], data.y_train[low], space),
        train(start_high, data.x_train[~low], data.y_train[~low], space),
    )
