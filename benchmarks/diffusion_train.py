"""Training the bilingual digits experiment's parts: a VAE, a base UNet, two language specialists, a classifier.

All budgets are in steps with fixed seeds, so a build is the same on a loaded machine, only slower.
The text encoder stays at its random initialisation: one trained on a single language squashes the
other language's prompts so that a second specialist cannot learn (``../shared/notes/diffusion-on-cpu.md``);
a frozen random encoder keeps every word distinct.
"""

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from sklearn.datasets import load_digits
from torch import nn

from benchmarks import diffusion_build as build
from m2n2.digits import MLP

log = logging.getLogger(__name__)

EMPTY_PROMPT_SHARE = 0.1  # the share of training prompts replaced by "" (classifier-free guidance needs it)


def digit_images(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 1,797 digits upscaled to ``size`` pixels in [-1, 1], (n, 1, size, size), and labels (n,)."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x * 2 - 1, torch.tensor(labels, dtype=torch.int64)


def train_classifier(steps: int, seed: int) -> tuple[MLP, float]:
    """The digits MLP (64-256-10) on 8x8 digits; returns it and its held-out accuracy (last 20%)."""
    images, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(images, dtype=torch.float32), torch.tensor(labels)
    n = int(0.8 * len(x))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = torch.randint(0, n, (128,), generator=generator)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = float((model(x[n:]).argmax(1) == y[n:]).float().mean())
    return model.eval().requires_grad_(False), accuracy


def train_vae(autoencoder: AutoencoderKL, images: torch.Tensor, steps: int, seed: int) -> AutoencoderKL:
    """Reconstruction plus a small KL term; then ``scaling_factor`` makes the latents unit-variance."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(autoencoder.parameters(), lr=1e-3)
    autoencoder.train()
    for step in range(steps):
        batch = images[torch.randint(0, len(images), (128,), generator=generator)]
        posterior = autoencoder.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        loss = F.mse_loss(autoencoder.decode(latents).sample, batch) + 1e-6 * posterior.kl().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0:
            log.info("vae step %d loss %.4f", step, loss.item())
    autoencoder.eval().requires_grad_(False)
    with torch.no_grad():
        std = float(autoencoder.encode(images).latent_dist.mean.std())
    autoencoder.register_to_config(scaling_factor=1.0 / std)
    return autoencoder


def encode_latents(autoencoder: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """The images' latent means times the scaling factor, (n, c, h, w): what the UNet learns to denoise."""
    with torch.no_grad():
        return autoencoder.encode(images).latent_dist.mean * autoencoder.config.scaling_factor


def embed(pipeline: StableDiffusionPipeline, texts: list[str]) -> torch.Tensor:
    """The frozen text encoder's hidden states for ``texts`` as the pipeline computes them, (n, tokens, hidden)."""
    ids = pipeline.tokenizer(
        texts,
        padding="max_length",
        max_length=pipeline.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        return pipeline.text_encoder(ids)[0]


def prompt_sampler(
    pipeline: StableDiffusionPipeline, language: str
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A function from labels (b,) to text states (b, tokens, hidden): the language's training prompts or ""."""
    empty = embed(pipeline, [""])[0]
    per_digit = torch.stack([embed(pipeline, build.prompts(language, "train", d)) for d in range(10)])  # (10, k, t, h)

    def sample(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        template = torch.randint(0, per_digit.shape[1], (len(labels),), generator=generator)
        states = per_digit[labels, template]  # (b, t, h)
        drop = torch.rand(len(labels), generator=generator) < EMPTY_PROMPT_SHARE
        return torch.where(drop[:, None, None], empty, states)

    return sample


def train_unet(
    model: UNet2DConditionModel,
    pipeline: StableDiffusionPipeline,
    latents: torch.Tensor,
    labels: torch.Tensor,
    language: str,
    steps: int,
    seed: int,
    lr: float,
    batch: int = 128,
) -> UNet2DConditionModel:
    """Epsilon-prediction training on the latents with the language's prompts (and "" for guidance)."""
    generator = torch.Generator().manual_seed(seed)
    sample_prompts = prompt_sampler(pipeline, language)
    noise_schedule = pipeline.scheduler
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(latents), (batch,), generator=generator)
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch,), generator=generator)
        noisy = noise_schedule.add_noise(clean, noise, t)
        states = sample_prompts(labels[index], generator)
        loss = F.mse_loss(model(noisy, t, encoder_hidden_states=states).sample, noise)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            log.info("unet %s step %d loss %.4f", language, step, loss.item())
    return model.eval().requires_grad_(False)
