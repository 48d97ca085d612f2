"""The family contract: how the ecosystem creates, builds, runs, scores and exports one architecture.

One ecosystem is one family plus a JSON ``config`` (stored with the ecosystem). A family is
stateless: every method takes the config, or a module built from it, so one registered
instance serves every ecosystem of that family (caches keyed by config are fine).

- ``classifier``: config ``{"layers": [...]}``; inputs are feature vectors, targets labels.
  It also implements ``FlatScoring``, so evolution runs on flat vectors in memory.
- ``causal-lm`` (transformers ``AutoModelForCausalLM``): config names a copy of the base
  model's files (``config.json``, tokenizer files) inside the data directory; inputs are
  prompts, targets reference answers; it also implements ``TextGeneration`` for the
  OpenAI-compatible routes.
- ``diffusion`` (diffusers): ``space`` covers only the UNet (as in the paper); the other
  pipeline parts come from the base pipeline directory.

Families without ``FlatScoring`` evolve lazily: each child is streamed tensor by tensor into
a safetensors file, and ``build`` reads it from a ``TensorSource``, so a 7B model is never a
flat vector and at most one model is held in memory per evaluation.

Errors: configs and data points that users send raise ``ValueError`` naming the field; a
checkpoint directory that does not fit raises ``RegistrationRefused`` naming the first
mismatch.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel

from m2n2.checkpoint import TensorSource
from m2n2.space import ParamSpace


@runtime_checkable
class Family(Protocol):
    """Build a module from a tensor source, run it for the API, score it per point, export it."""

    name: str
    scoring_rules: tuple[str, ...]
    api: str  # the public API its models answer: "predict", "completions" or "images"
    # The generic /predict route: the pydantic type of one input (each request's inputs are validated against
    # it, and the OpenAPI document shows it) and the pydantic model of one answer (``predict`` returns its fields).
    predict_input: Any
    predict_output: type[BaseModel]

    def create_config(self, options: Mapping[str, Any], root: Path) -> dict[str, Any]:
        """A new ecosystem's config from ``m2n2 init`` options (files it needs are copied under ``root``)."""
        ...

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config, checked and normalised; ``ValueError`` naming the bad field."""
        ...

    def validate_point(self, config: Mapping[str, Any], inputs: Any, target: Any) -> None:
        """Check one labelled data point against the config; ``ValueError`` naming the bad field."""
        ...

    def space(self, config: Mapping[str, Any]) -> ParamSpace:
        """The parameter space every model of this ecosystem shares (what gets merged), in canonical order."""
        ...

    def weight_files(self, config: Mapping[str, Any], directory: Path) -> list[Path]:
        """The safetensors files holding a model in a checkpoint directory of this family's layout.

        Checks the directory's own files against the ecosystem's (config fields, tokenizer) and raises
        ``RegistrationRefused`` naming the first mismatch; refuses pickles naming the file.
        """
        ...

    def build(self, config: Mapping[str, Any], source: TensorSource, device: str = "cpu") -> torch.nn.Module:
        """An eval-mode module on ``device`` holding the source's tensors in the compute dtype.

        Reads one tensor at a time, so the peak is one model plus one tensor.
        """
        ...

    def smoke_inputs(self, config: Mapping[str, Any]) -> list:
        """A tiny valid input batch: a new champion must answer it (finitely) before it is served."""
        ...

    def predict(self, module: torch.nn.Module, config: Mapping[str, Any], inputs: list) -> list[dict[str, Any]]:
        """One JSON-serialisable answer per input, for the generic ``/predict`` route."""
        ...

    def score(
        self, module: torch.nn.Module, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> torch.Tensor:
        """Per-point scores of shape (n,) in [0, 1] under one of ``scoring_rules`` (batched inside)."""
        ...

    def export(self, config: Mapping[str, Any], source: TensorSource, directory: Path) -> list[Path]:
        """Write the model in its ecosystem's native layout (e.g. ``save_pretrained``'s); the files written."""
        ...


@runtime_checkable
class FlatScoring(Protocol):
    """Optional fast path for small models: score flat parameter vectors without building modules."""

    def flat_scorer(
        self, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function from a flat vector (dim,) to scores (n,), equal to ``score(build(...))``."""
        ...


@dataclass(frozen=True)
class Sampling:
    """How to decode one completion (the OpenAI parameters); ``temperature == 0`` is greedy."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """New text of one sequence at one decoding step; ``finish_reason`` ("stop", "length") on its last."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0  # tokens generated so far for this sequence


@runtime_checkable
class TextGeneration(Protocol):
    """Families whose models generate text: what the OpenAI-compatible routes need."""

    def context_length(self, config: Mapping[str, Any]) -> int:
        """Most tokens (prompt plus completion) the model takes."""
        ...

    def count_tokens(self, config: Mapping[str, Any], text: str) -> int:
        """Tokens of ``text`` as the model reads a prompt (special tokens included)."""
        ...

    def chat_prompt(self, config: Mapping[str, Any], messages: list[dict[str, str]]) -> str:
        """The prompt for chat ``messages``: the tokenizer's chat template, else a documented plain one."""
        ...

    def generate(
        self, module: torch.nn.Module, config: Mapping[str, Any], prompts: list[str], sampling: list[Sampling]
    ) -> Iterator[list[Delta | None]]:
        """Decode all prompts in one padded batch; yield per step one ``Delta`` per prompt (None once done).

        Each prompt has its own ``Sampling``: a seeded one gives the same text whatever it is batched with.
        """
        ...
