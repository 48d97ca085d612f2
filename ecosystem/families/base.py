"""The family protocol: how the ecosystem builds, runs and scores one architecture.

One ecosystem is one family plus a JSON ``config`` (stored with the ecosystem). A family
is stateless: every method takes the config or a module built from it, so one registered
instance serves every ecosystem of that family.

The contract is deliberately narrow so the families in DESIGN.md fit without changing it:

- ``classifier`` (here): config ``{"layers": [...]}``; inputs are feature vectors,
  targets labels; it also implements ``FlatScoring`` for evolution on flat vectors.
- ``causal-lm`` (transformers ``AutoModelForCausalLM``): config names the base model
  (``{"base": "org/model", "revision": ...}``); ``space`` reads the architecture on the
  meta device, ``build`` loads the merged state dict into it (``assign=True``, eval mode);
  inputs are prompts (strings), targets reference completions; ``predict`` generates and
  returns ``[{"text": ...}]``; rules ``exact_match`` (normalised completion equals the
  target) and ``likelihood`` (geometric-mean probability of the target tokens, in [0, 1]).
  It does not implement ``FlatScoring``: 7B vectors are never flattened, so evolution
  builds each child (tensor by tensor from lazy sources) and calls ``score``.
- ``diffusion`` (diffusers): ``space`` covers only the UNet (as in the paper), so
  registered checkpoints and merges are UNet state dicts; ``build`` returns an
  ``nn.Module`` holding the fixed pipeline parts with the merged UNet as a submodule;
  inputs are prompts, targets whatever the configured per-sample scorer needs
  (``{"scorer": "clip_similarity", ...}`` in the config picks it from a scorer registry);
  ``predict`` returns images (e.g. base64 PNG), ``score`` maps the scorer's output to [0, 1].

Errors: configs and data points that users send raise ``ValueError`` naming the field.
"""

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from m2n2.space import ParamSpace


@runtime_checkable
class Family(Protocol):
    """Build a module from a config and a state dict, run it for the API, score it per point."""

    name: str
    scoring_rules: tuple[str, ...]

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config, checked and normalised; ``ValueError`` naming the bad field."""
        ...

    def validate_point(self, config: Mapping[str, Any], inputs: Any, target: Any) -> None:
        """Check one labelled data point against the config; ``ValueError`` naming the bad field."""
        ...

    def space(self, config: Mapping[str, Any]) -> ParamSpace:
        """The parameter space every model of this ecosystem shares (what gets merged)."""
        ...

    def build(self, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """A module in eval mode holding ``state_dict`` (cast to the space's dtypes)."""
        ...

    def smoke_inputs(self, config: Mapping[str, Any]) -> list:
        """A tiny valid input batch: a service runs it through a new champion before serving it."""
        ...

    def predict(self, module: torch.nn.Module, inputs: list) -> list[dict[str, Any]]:
        """One JSON-serialisable answer per input, for the HTTP API."""
        ...

    def score(self, module: torch.nn.Module, inputs: list, targets: list, rule: str) -> torch.Tensor:
        """Per-point scores of shape (n,) in [0, 1] under one of ``scoring_rules``."""
        ...


@runtime_checkable
class FlatScoring(Protocol):
    """Optional fast path for small models: score flat parameter vectors without building modules."""

    def flat_scorer(
        self, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function from a flat vector (dim,) to scores (n,), equal to ``score(build(...))``."""
        ...
