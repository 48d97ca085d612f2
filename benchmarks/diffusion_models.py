"""The bilingual digits experiment's models, built once per configuration and cached on disk.

``build(cache, config)`` writes under ``cache/diffusion-<key>/``: ``base/``, ``en/`` and ``ja/``
(pipeline directories ``DiffusionPipeline.from_pretrained`` loads; they differ only in the UNet) and
``classifier/`` (the digits scorer's directory). The key is a digest of the configuration, so a
changed budget or seed builds afresh and an unchanged one is read back.
"""

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks import diffusion_build as build_parts
from benchmarks import diffusion_train as train
from ecosystem.families import image_scorers

log = logging.getLogger(__name__)
LANGUAGES = ("en", "ja")
BASE_LANGUAGE = "num"  # the base follows numerals ("a handwritten 7"), so it has learnt to read prompts


@dataclass(frozen=True)
class BuildConfig:
    """Every budget and seed of a build (steps, not seconds: the same build on a loaded machine)."""

    seed: int = 0
    size: str = "bench"  # a key of diffusion_build.SIZES
    vae_steps: int = 40
    base_steps: int = 700
    specialist_steps: int = 600
    base_lr: float = 2e-3
    specialist_lr: float = 2e-3
    batch: int = 128
    classifier_steps: int = 1500
    version: int = 3  # bump when the training code changes what a build means

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# Seconds to build, untrained: for tests of the plumbing (the image demo's --size tiny too).
TINY = BuildConfig(size="test", vae_steps=1, base_steps=1, specialist_steps=1, classifier_steps=1)
PRESETS = {"full": BuildConfig(), "tiny": TINY}


def build(cache: Path, config: BuildConfig) -> Path:
    """The build's directory, training whatever is not there yet (each part is written when finished)."""
    root = Path(cache) / f"diffusion-{config.key()}"
    done = root / "build.json"
    if done.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    size = build_parts.SIZES[config.size]
    pipeline = build_parts.random_pipeline(size, config.seed)
    images, labels = train.digit_images(size.image_size)
    train.train_vae(pipeline.vae, images, config.vae_steps, config.seed)
    seconds["vae"] = time.perf_counter() - start
    latents = train.encode_latents(pipeline.vae, images)
    start = time.perf_counter()
    train.train_unet(
        pipeline.unet,
        pipeline,
        latents,
        labels,
        BASE_LANGUAGE,
        config.base_steps,
        config.seed + 1,
        config.base_lr,
        config.batch,
    )
    seconds["base"] = time.perf_counter() - start
    build_parts.save_pipeline(pipeline, root / "base")
    base_state = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
    for i, language in enumerate(LANGUAGES):
        start = time.perf_counter()
        pipeline.unet.load_state_dict(base_state)
        pipeline.unet.requires_grad_(True)
        train.train_unet(
            pipeline.unet,
            pipeline,
            latents,
            labels,
            language,
            config.specialist_steps,
            config.seed + 2 + i,
            config.specialist_lr,
            config.batch,
        )
        seconds[language] = time.perf_counter() - start
        build_parts.save_pipeline(pipeline, root / language)
    classifier, accuracy = train.train_classifier(config.classifier_steps, config.seed)
    image_scorers.save_digits_classifier(classifier, root / "classifier")
    facts = {"config": asdict(config), "seconds": seconds, "classifier_test_accuracy": accuracy}
    done.write_text(json.dumps(facts, indent=2))
    log.info("built %s in %.0f s", root, sum(seconds.values()))
    return root


def main() -> None:
    """Build with the default configuration into ``benchmarks/results/cache`` (the experiment does this too)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)  # on a shared, loaded machine two threads wait on each other: 5-20x slower
    print(build(Path("benchmarks/results/cache"), BuildConfig()))


if __name__ == "__main__":
    main()
