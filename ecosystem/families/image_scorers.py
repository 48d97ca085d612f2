"""Per-sample scorers for generated images: how well each image follows its prompt, in [0, 1].

A scorer is loaded from a local directory (never from a hub, never unpickled) and scores a batch of
images against one target text per image. Registered scorers:

- ``clip``: a transformers ``CLIPModel`` directory (config, safetensors weights, tokenizer). The score
  is the cosine similarity of the image's and the target text's embeddings, clipped to [0, 1]. The
  paper compares candidates after normalising each sample by the population's worst model on it:
  ``normalise_by_worst`` does that on a (models, samples) matrix.
- ``digits``: the project's digits classifier (``save_digits_classifier`` writes its directory: an MLP
  64-256-10 on images pooled to 8x8). The target is the digit ("7"); the score is its probability.
"""

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ecosystem.errors import RegistrationRefused
from ecosystem.families.hf_files import read_json
from m2n2.digits import MLP

DIGITS_CONFIG = {"architecture": "digits-mlp", "n_inputs": 64, "n_hidden": 256, "n_classes": 10}
# OpenAI CLIP's pixel statistics: used when the directory has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageScorer(Protocol):
    """Scores images (n, channels, h, w) in [0, 1] against one target text each: (n,) in [0, 1]."""

    def __call__(self, images: torch.Tensor, targets: list[str]) -> torch.Tensor: ...

    def check_target(self, target: str) -> None:
        """``ValueError`` naming what is wrong with a data point's target."""
        ...


SCORERS: dict[str, Callable[[Path], ImageScorer]] = {}


def register_scorer(name: str) -> Callable[[type], type]:
    """Class decorator: the class, constructed from a directory, scores under ``name``."""

    def register(cls: type) -> type:
        if name in SCORERS:
            raise ValueError(f"image scorer {name!r} is already registered")
        SCORERS[name] = cls
        return cls

    return register


@functools.lru_cache(maxsize=4)
def load_scorer(name: str, directory: str) -> ImageScorer:
    """The scorer ``name`` loaded from ``directory`` (once per process); ``ValueError`` naming the problem."""
    if name not in SCORERS:
        raise ValueError(f"scorer: unknown image scorer {name!r}; available: {', '.join(sorted(SCORERS))}")
    if not Path(directory).is_dir():
        raise ValueError(f"scorer_dir: {directory} is not a directory")
    return SCORERS[name](Path(directory))


def normalise_by_worst(scores: torch.Tensor) -> torch.Tensor:
    """The paper's per-sample normalisation of a population's scores (models, samples): (s - worst) / (1 - worst).

    The worst model on a sample gets 0 there, a perfect one 1; the order of models per sample is kept.
    """
    worst = scores.min(dim=0, keepdim=True).values  # (1, samples)
    return ((scores - worst) / (1 - worst).clamp(min=1e-6)).clamp(0.0, 1.0)


def _check_images(images: torch.Tensor, targets: list[str]) -> None:
    if images.ndim != 4 or len(images) != len(targets):
        raise ValueError(f"images: expected (n, channels, h, w) with n = {len(targets)}, got {list(images.shape)}")


@register_scorer("digits")
class DigitsScorer:
    """The probability the digits classifier gives the target digit, on the image pooled to 8x8."""

    def __init__(self, directory: Path) -> None:
        config = _read_json(directory / "config.json")
        if config.get("architecture") != DIGITS_CONFIG["architecture"]:
            raise ValueError(f"scorer_dir: {directory} holds no digits classifier (config.json architecture)")
        self.model = MLP(config["n_inputs"], config["n_hidden"], config["n_classes"])
        self.model.load_state_dict(load_file(directory / "model.safetensors"))
        self.model.eval().requires_grad_(False)

    def check_target(self, target: str) -> None:
        if not isinstance(target, str) or target not in {str(d) for d in range(10)}:
            raise ValueError(f"target: expected a digit '0'..'9' (what the image should show), got {target!r}")

    def __call__(self, images: torch.Tensor, targets: list[str]) -> torch.Tensor:
        _check_images(images, targets)
        for t in targets:
            self.check_target(t)
        with torch.no_grad():
            probabilities = self.model(digits_features(images)).softmax(dim=-1)  # (n, 10)
        labels = torch.tensor([int(t) for t in targets])
        return probabilities[torch.arange(len(targets)), labels].clamp(0.0, 1.0)  # (n,)


def digits_features(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (n, c, h, w), grey, pooled to 8x8 and scaled to the digits' 0..16: (n, 64)."""
    grey = images.float().mean(dim=1, keepdim=True)  # (n, 1, h, w)
    return (F.adaptive_avg_pool2d(grey, 8).clamp(0, 1) * 16).reshape(len(images), 64)


def save_digits_classifier(model: MLP, directory: Path) -> Path:
    """Write the ``digits`` scorer's directory: ``config.json`` and ``model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(DIGITS_CONFIG, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    return directory


@register_scorer("clip")
class ClipScorer:
    """Cosine similarity of CLIP's image and text embeddings, clipped to [0, 1]."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoTokenizer, CLIPModel

        if any(directory.glob("*.bin")) and not any(directory.glob("*.safetensors")):
            raise ValueError(f"scorer_dir: {directory} holds only pickled weights; save it with safetensors")
        self.model = CLIPModel.from_pretrained(directory, use_safetensors=True).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        processor = directory / "preprocessor_config.json"
        stats = _read_json(processor) if processor.is_file() else {}
        self.mean = torch.tensor(stats.get("image_mean", CLIP_MEAN)).view(1, -1, 1, 1)
        self.std = torch.tensor(stats.get("image_std", CLIP_STD)).view(1, -1, 1, 1)
        self.side = self.model.config.vision_config.image_size

    def check_target(self, target: str) -> None:
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"target: expected the text the image should match, got {target!r}")

    def __call__(self, images: torch.Tensor, targets: list[str]) -> torch.Tensor:
        _check_images(images, targets)
        for t in targets:
            self.check_target(t)
        pixels = images.float()
        channels = self.model.config.vision_config.num_channels
        if pixels.shape[1] != channels:  # grey images to RGB
            pixels = pixels.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
        pixels = F.interpolate(pixels, size=(self.side, self.side), mode="bicubic", align_corners=False).clamp(0, 1)
        pixels = (pixels - self.mean[:, :channels]) / self.std[:, :channels]
        tokens = self.tokenizer(targets, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            image_embeds = _embeddings(self.model.get_image_features(pixel_values=pixels))
            text_embeds = _embeddings(self.model.get_text_features(**tokens))
        cosine = F.cosine_similarity(image_embeds, text_embeds, dim=-1)  # (n,)
        return cosine.clamp(0.0, 1.0)


def _embeddings(output) -> torch.Tensor:
    """The pooled embedding, whether transformers returns a tensor or a model output holding it."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _read_json(path: Path) -> dict:
    try:
        return read_json(path)
    except RegistrationRefused as e:
        raise ValueError(f"scorer_dir: {path}: {e}") from None
