"""Tiny diffusers pipelines, UNets and scorer directories for the tests: random weights, built in about a second."""

from pathlib import Path

import torch

from benchmarks import diffusion_build as build
from ecosystem.families import image_scorers
from m2n2.digits import MLP


def tiny_pipeline(directory: Path, seed: int = 0) -> Path:
    """A Stable Diffusion pipeline directory (16x16 grey images, a 67K-parameter UNet)."""
    return build.save_pipeline(build.random_pipeline(build.TEST, seed), directory)


def tiny_unet(directory: Path, seed: int = 1, channels: tuple[int, ...] = build.TEST.unet_channels) -> Path:
    """A UNet folder of the tiny pipeline's architecture (or another, with other ``channels``)."""
    size = build.Size(
        text_hidden=build.TEST.text_hidden,
        text_layers=build.TEST.text_layers,
        unet_channels=channels,
        vae_channels=build.TEST.vae_channels,
        groups=build.TEST.groups,
    )
    return build.random_unet_dir(directory, size, seed)


def digits_classifier(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised digits classifier in the ``digits`` scorer's layout."""
    torch.manual_seed(seed)
    return image_scorers.save_digits_classifier(MLP(), directory)


def clip_model(directory: Path) -> Path:
    """A tiny random CLIP model in the ``clip`` scorer's layout."""
    return build.random_clip(directory)
