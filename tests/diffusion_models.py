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


def diffusion_data_dir(root: Path) -> Path:
    """A diffusion ecosystem in ``root/data``: a tiny base, two UNets and a digits task with a few prompts."""
    from ecosystem import setup, tasks
    from ecosystem.runtime import open_runtime
    from ecosystem.settings import Settings
    from ecosystem.specialists import register

    base = tiny_pipeline(root / "models" / "base")
    options = {"base": str(base), "steps": 2, "max_size": 32, "max_steps": 8, "max_images": 3}
    options["digits_dir"] = str(digits_classifier(root / "models" / "digits"))
    runtime = open_runtime(Settings(data_dir=root / "data"))
    try:
        setup.create(runtime, "diffusion", options)
        for seed in (1, 2):
            unet = tiny_unet(root / "models" / f"unet-{seed}", seed=seed)
            register(runtime, unet, name=f"unet-{seed}", registered_by="test", source="tests", licence="MIT")
        tasks.create_task(runtime, name="digits", scoring="digits", gate_share=0.5)
        points = [{"inputs": p, "target": t} for p, t in (("a handwritten seven", "7"), ("the digit one", "1"))]
        tasks.add_feedback(runtime, "digits", points * 2)
    finally:
        runtime.close()
    return base
