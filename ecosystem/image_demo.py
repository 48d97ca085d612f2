"""The image demo ecosystem: the bilingual digits experiment's two specialists, a task per prompt language.

``m2n2 init --demo images`` builds (or reads from its cache) the small text-to-image pipelines of
``benchmarks.diffusion_models``: one base and two specialists fine-tuned from it, one on English
prompts ("a handwritten seven") and one on Japanese ones ("手書き の 七"). The ecosystem's base is
that pipeline; both specialists' UNets are registered; the tasks ``english`` and ``japanese`` are
scored by the digits classifier (the probability of the prompted digit), with the training prompt
templates as fitness points and the held-out ones as gate points. The first build trains for
minutes (``BENCHMARKS.md`` has the figures); later ones reuse the cache.
"""

import logging
import shutil
from pathlib import Path

import platformdirs

from benchmarks import diffusion_build as prompts
from benchmarks.diffusion_models import LANGUAGES, PRESETS, BuildConfig, build
from ecosystem import setup, tasks
from ecosystem.runtime import Runtime
from ecosystem.specialists import Registration, register

log = logging.getLogger(__name__)

TASKS = {"en": "english", "ja": "japanese"}
SOURCE = "benchmarks.diffusion_models: fine-tuned from the demo base on {} digit prompts (sklearn digits, 16x16)"
LICENCE = "BSD-3-Clause"  # scikit-learn's, which ships the digits data
SIZES = PRESETS  # full: the experiment's models; tiny: untrained, in seconds


def default_cache() -> Path:
    """Where built demo models are kept between ecosystems: the user's cache directory."""
    return platformdirs.user_cache_path("m2n2") / "diffusion"


def init_images(
    runtime: Runtime, config: BuildConfig = PRESETS["full"], cache: Path | None = None
) -> list[Registration]:
    """Create the image ecosystem in an empty store: the base pipeline, both specialists, a task per language."""
    built = build(cache or default_cache(), config)
    scorer = runtime.settings.data_dir / "scorers" / "digits"
    if not scorer.is_dir():
        shutil.copytree(built / "classifier", scorer)  # the ecosystem keeps working if the cache is cleared
    setup.create(
        runtime,
        "diffusion",
        {"base": str(built / "base"), "digits_dir": str(scorer.resolve()), "steps": 10, "guidance": 5.0},
    )
    for language, name in TASKS.items():
        tasks.create_task(runtime, name=name, scoring="digits")
        points = [
            {"inputs": prompt, "target": str(digit), "pool": pool}
            for pool, split in (("fitness", "train"), ("gate", "test"))
            for digit in range(10)
            for prompt in prompts.prompts(language, split, digit)
        ]
        tasks.add_feedback(runtime, name, points)
    return [
        register(
            runtime,
            built / language,
            name=f"digits-{TASKS[language]}",
            registered_by="m2n2 init --demo images",
            source=SOURCE.format(TASKS[language].capitalize()),
            licence=LICENCE,
        )
        for language in LANGUAGES
    ]
