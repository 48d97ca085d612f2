"""The ``diffusion`` family: diffusers text-to-image pipelines whose UNets are merged, as in the paper.

An ecosystem is created from a local pipeline directory (``m2n2 init --family diffusion --base DIR``);
its members are UNets of the base's architecture. Text encoders, tokenizers, VAE and scheduler come
from the base pipeline, copied into the data directory. The config (``create_config`` writes it,
``validate_config`` fills the defaults):

- ``base`` (the directory it was created from, for the record) and ``base_dir`` (absolute path of the
  copy, without the UNet's weights, plus ``param_space.json``: the UNet's tensors in state-dict order).
- ``chromosomes`` (default ``"attention"``, the paper's): the UNet's attention layers (``attn1``,
  ``attn2``, ...) evolve as a chromosome of their own, with their own split point and mixing ratio;
  ``"single"``: the whole UNet is one vector.
- ``dtype`` (``float32``): compute dtype of built models. ``steps`` (20) and ``guidance`` (5.0):
  the sampler's steps and classifier-free guidance when scoring and by default when serving.
  ``image_size`` (the UNet's native side): pixels of scored images. ``batch_size`` (16): images per
  denoising batch. ``seed`` (0): scoring draws each point's noise from ``seed`` and its prompt, so a
  model scores the same every time.
- ``max_size`` (4 x ``image_size``), ``max_steps`` (100), ``max_images`` (4): what one images request
  may ask for.
- ``digits_dir``, ``clip_dir``: the directories of the image scorers the scoring rules of the same
  names use (``ecosystem.families.image_scorers``).
"""

import base64
import functools
import inspect
import io
import json
import logging
import math
import re
import secrets
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from ecosystem.errors import RegistrationRefused
from ecosystem.families import diffusers_files as files
from ecosystem.families import image_scorers
from ecosystem.families.hf_files import is_int, to_compute
from ecosystem.families.registry import register_family
from m2n2.checkpoint import DTYPE_NAMES, DTYPES, TensorSource, iter_tensors, write_safetensors
from m2n2.errors import IncompatibleModels
from m2n2.space import ChromosomeSpace, ParamSpace

logger = logging.getLogger(__name__)

SPACE_FILE = "param_space.json"
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHROMOSOMES = ("attention", "single")
ATTENTION = re.compile(r"(^|\.)attn\d*\.")  # the transformer blocks' attention layers: attn1 (self), attn2 (cross)
SCORER_DIRS = {name: f"{name}_dir" for name in image_scorers.SCORERS}  # rule -> config field of its directory
DEFAULTS: dict[str, Any] = {
    "chromosomes": "attention",
    "dtype": "float32",
    "steps": 20,
    "guidance": 5.0,
    "batch_size": 16,
    "seed": 0,
    "max_steps": 100,
    "max_images": 4,
}
OPTIONAL = ("image_size", "max_size", *SCORER_DIRS.values())
SMOKE_PROMPT = "a test image"
Prompt = Annotated[str, Field(min_length=1, description="a text prompt to draw")]


class GeneratedImage(BaseModel):
    """One image drawn for one prompt."""

    b64_json: str = Field(description="the PNG, base64-encoded")
    seed: int = Field(description="the seed of its starting noise (the same seed draws the same image)")


class DiffusionModel(nn.Module):
    """A pipeline's parts as one module: the merged UNet plus the base's frozen components."""

    def __init__(self, unet: nn.Module, parts: "BaseParts") -> None:
        super().__init__()
        self.unet = unet
        self.parts = parts
        for name, component in parts.modules.items():
            self.add_module(name, component)

    def pipeline(self):
        """A fresh pipeline object around these parts (its own scheduler state, so calls never share one)."""
        scheduler = self.parts.others["scheduler"]
        components = {
            **self.parts.others,
            **self.parts.modules,
            "unet": self.unet,
            "scheduler": type(scheduler).from_config(scheduler.config),
        }
        if "requires_safety_checker" in inspect.signature(self.parts.pipeline_class).parameters:
            components["requires_safety_checker"] = False
        pipeline = self.parts.pipeline_class(**components)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


class BaseParts:
    """The base pipeline's components other than the UNet, loaded once per base, dtype and device."""

    def __init__(self, base_dir: str, dtype: torch.dtype, device: str) -> None:
        from diffusers import DiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(base_dir, unet=None, dtype=dtype, local_files_only=True)
        self.pipeline_class = type(pipeline)
        self.modules: dict[str, nn.Module] = {}
        self.others: dict[str, Any] = {}
        for name, component in pipeline.components.items():
            if name == files.UNET:
                continue
            if isinstance(component, nn.Module):
                self.modules[name] = component.to(device).eval().requires_grad_(False)
            else:
                self.others[name] = component
        self.vae_scale_factor = int(getattr(pipeline, "vae_scale_factor", 8))


@register_family
class Diffusion:
    """diffusers text-to-image pipelines: prompts in, images out; the UNet is what evolves."""

    name = "diffusion"
    scoring_rules: tuple[str, ...] = tuple(sorted(image_scorers.SCORERS))
    api = "images"
    predict_input = Prompt
    predict_output = GeneratedImage

    def create_config(self, options: Mapping[str, Any], root: Path) -> dict[str, Any]:
        """Copy the base pipeline (without UNet weights) to ``root/base``, record the UNet's space."""
        options = dict(options)
        base = options.pop("base", None)
        if not isinstance(base, str) or not base:
            raise ValueError(f"base: expected a local diffusers pipeline directory, got {base!r}")
        source = Path(base).expanduser()
        if not source.is_dir():
            raise ValueError(f"base: {base} is not a directory (diffusion bases are local pipeline directories)")
        for field in SCORER_DIRS.values():  # relative to where the command runs
            if isinstance(options.get(field), str):
                options[field] = str(Path(options[field]).expanduser().resolve())
        _check_settings({**DEFAULTS, **options}, allowed={*DEFAULTS, *OPTIONAL})
        files.check_pipeline(source)
        unet = source / files.UNET
        space = files.unet_space(unet, files.weight_files(unet))
        if options.get("chromosomes", DEFAULTS["chromosomes"]) == "attention" and not any(
            ATTENTION.search(n) for n in space.names
        ):
            raise ValueError("chromosomes: the UNet has no attention layers (attn1, attn2, ...); use 'single'")
        target = Path(root) / "base"
        if target.exists():
            raise ValueError(f"base: {target} already exists; create the ecosystem in a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".base-"))
        try:
            files.copy_pipeline(source, staging, skip=set())
            _write_space(staging / SPACE_FILE, space)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("diffusion base %s: UNet of %d tensors, %d parameters", base, len(space), space.dim)
        return self.validate_config({"base": base, "base_dir": str(target.resolve()), **options})

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config with defaults filled in; ``ValueError`` naming an unknown or malformed field."""
        if not isinstance(config, Mapping):
            raise ValueError(f"config: expected an object with 'base_dir', got {config!r}")
        out = _check_settings({**DEFAULTS, **config}, allowed={"base", "base_dir", *DEFAULTS, *OPTIONAL})
        base_dir = out.get("base_dir")
        if not isinstance(base_dir, str) or not Path(base_dir).is_absolute():
            raise ValueError(f"config.base_dir: expected an absolute directory path, got {base_dir!r}")
        if not (Path(base_dir) / SPACE_FILE).is_file():
            raise ValueError(f"config.base_dir: {base_dir} holds no {SPACE_FILE}; create it with create_config")
        out.setdefault("base", base_dir)
        if out.get("image_size") is None:
            out["image_size"] = _native_size(base_dir)
        out.setdefault("max_size", 4 * out["image_size"])
        for field in ("image_size", "max_size"):
            if not is_int(out[field]) or out[field] < 1:
                raise ValueError(f"config.{field}: expected a positive integer, got {out[field]!r}")
        return out

    def validate_point(self, config: Mapping[str, Any], inputs: Any, target: Any) -> None:
        """``inputs`` a non-empty prompt; ``target`` a non-empty text (a digit for the ``digits`` rule)."""
        self.validate_config(config)
        if not isinstance(inputs, str) or not inputs.strip():
            raise ValueError(f"inputs: expected a non-empty prompt string, got {inputs!r}")
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"target: expected a non-empty text (what the image should show), got {target!r}")

    def space(self, config: Mapping[str, Any]) -> ParamSpace:
        """The UNet's tensors in state-dict order; with ``chromosomes="attention"`` its attention layers apart."""
        cfg = self.validate_config(config)
        return _space_at(cfg["base_dir"], cfg["chromosomes"])

    def weight_files(self, config: Mapping[str, Any], directory: Path) -> list[Path]:
        """The UNet weights of a pipeline directory or UNet folder whose UNet config matches the base's."""
        base_dir = Path(self.validate_config(config)["base_dir"])
        directory = Path(directory)
        if not directory.is_dir():
            raise RegistrationRefused(f"{directory}: not a directory")
        unet = files.unet_dir(directory)
        files.check_unet_config(base_dir / files.UNET, unet)
        return files.weight_files(unet)

    def build(self, config: Mapping[str, Any], source: TensorSource, device: str = "cpu") -> nn.Module:
        """The UNet from the source (built on the meta device, then given the tensors) with the base's parts."""
        cfg = self.validate_config(config)
        space = self.space(cfg)
        space.check_compatible(source.space, "UNet")
        dtype = COMPUTE_DTYPES[cfg["dtype"]]
        unet = files.empty_unet(Path(cfg["base_dir"]) / files.UNET)
        tensors = {name: to_compute(t, device, dtype) for name, t in iter_tensors(source, space)}
        missing, unexpected = unet.load_state_dict(tensors, strict=False, assign=True)
        if missing or unexpected:
            raise IncompatibleModels(f"UNet: tensor {(missing or unexpected)[0]!r} does not fit")
        leftover = [n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
        if leftover:
            raise IncompatibleModels(f"UNet: tensor {leftover[0]!r} was not loaded")
        unet.requires_grad_(False).eval()
        return DiffusionModel(unet, _base_parts(cfg["base_dir"], cfg["dtype"], str(device))).eval()

    def smoke_inputs(self, config: Mapping[str, Any]) -> list:
        """One short prompt."""
        return [SMOKE_PROMPT]

    def predict(self, module: nn.Module, config: Mapping[str, Any], inputs: list) -> list[dict[str, Any]]:
        """One PNG per prompt at the config's size, steps and guidance; its seed comes from the prompt."""
        cfg = self.validate_config(config)
        _check_strings(inputs, "inputs")
        seeds = [point_seed(cfg["seed"], p) for p in inputs]
        images = self.draw(module, cfg, inputs, seeds)
        return [{"b64_json": base64.b64encode(png(i)).decode(), "seed": s} for i, s in zip(images, seeds, strict=True)]

    def score(
        self, module: nn.Module, config: Mapping[str, Any], inputs: list, targets: list, rule: str
    ) -> torch.Tensor:
        """Scores (n,) in [0, 1]: each prompt's image (noise seeded by the prompt) under the rule's scorer."""
        cfg = self.validate_config(config)
        scorer = self.scorer(cfg, rule)
        _check_strings(inputs, "inputs")
        _check_strings(targets, "targets")
        if len(targets) != len(inputs):
            raise ValueError(f"targets: expected {len(inputs)} targets (one per input), got {len(targets)}")
        images = self.draw(module, cfg, inputs, [point_seed(cfg["seed"], p) for p in inputs])
        return scorer(images, targets).float().clamp(0.0, 1.0)  # (n,)

    def export(self, config: Mapping[str, Any], source: TensorSource, directory: Path) -> list[Path]:
        """A pipeline directory ``DiffusionPipeline.from_pretrained`` loads: the base's parts and this UNet."""
        cfg = self.validate_config(config)
        space = self.space(cfg)
        space.check_compatible(source.space, "UNet")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = files.copy_pipeline(Path(cfg["base_dir"]), directory, skip={SPACE_FILE})
        plain = ParamSpace([(s.name, s.shape, s.dtype) for s in space])
        weights = directory / files.UNET / files.WEIGHTS
        written.append(write_safetensors(weights, plain, iter_tensors(source, plain), metadata={"format": "pt"}))
        return written

    # --- images ------------------------------------------------------------------------------------------

    def scorer(self, config: Mapping[str, Any], rule: str) -> image_scorers.ImageScorer:
        """The image scorer of a scoring rule, from the directory the config names for it."""
        if rule not in image_scorers.SCORERS:
            raise ValueError(f"rule: unknown scoring rule {rule!r}; available: {', '.join(self.scoring_rules)}")
        field = SCORER_DIRS[rule]
        directory = config.get(field)
        if not directory:
            raise ValueError(f"config.{field}: the {rule!r} rule needs its scorer's directory (--set {field}=DIR)")
        return image_scorers.load_scorer(rule, directory)

    def size_multiple(self, config: Mapping[str, Any]) -> int:
        """Image sides must be multiples of this: the VAE's factor times the UNet's downsampling."""
        cfg = self.validate_config(config)
        unet = files.read_json(Path(cfg["base_dir"]) / files.UNET / "config.json")
        levels = len(unet.get("block_out_channels", [0])) - 1
        return _vae_scale_factor(cfg["base_dir"]) * 2**levels

    def draw(
        self,
        module: nn.Module,
        config: Mapping[str, Any],
        prompts: list[str],
        seeds: list[int],
        *,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        negative_prompt: str | None = None,
    ) -> torch.Tensor:
        """Images (n, channels, height, width) in [0, 1]; image i starts from noise seeded by ``seeds[i]``.

        Each image's noise comes from its own generator, so an image depends on its prompt and seed,
        not on what it is batched with. Defaults are the config's.
        """
        cfg = self.validate_config(config)
        if not isinstance(module, DiffusionModel):
            raise ValueError(f"module: expected a model built by the diffusion family, got {type(module).__name__}")
        pipeline = module.pipeline()
        device = next(module.unet.parameters()).device
        out = []
        size = cfg["image_size"]
        for start in range(0, len(prompts), cfg["batch_size"]):
            batch = prompts[start : start + cfg["batch_size"]]
            generators = [
                torch.Generator(device=device).manual_seed(s) for s in seeds[start : start + cfg["batch_size"]]
            ]
            with torch.inference_mode():
                result = pipeline(
                    prompt=batch,
                    negative_prompt=None if negative_prompt is None else [negative_prompt] * len(batch),
                    height=height or size,
                    width=width or size,
                    num_inference_steps=steps or cfg["steps"],
                    guidance_scale=cfg["guidance"] if guidance is None else guidance,
                    generator=generators,
                    output_type="pt",
                )
            out.append(result.images.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 1, size, size)


def point_seed(seed: int, prompt: str) -> int:
    """The noise seed of a scored prompt: fixed by the config's seed and the prompt's text."""
    return (seed * 1_000_003 + zlib.crc32(prompt.encode())) % 2**63


def random_seed() -> int:
    """A seed for a request that sets none (returned with the image, so it can be drawn again)."""
    return secrets.randbits(31)


def png(image: torch.Tensor) -> bytes:
    """PNG bytes of one image (channels, height, width) in [0, 1]: grey for one channel, else RGB."""
    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels[:3].permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L" if pixels.shape[0] == 1 else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# --- the base's space and parts, cached per base directory -----------------------------------------------


@functools.lru_cache(maxsize=16)
def _space_at(base_dir: str, chromosomes: str) -> ParamSpace:
    entries = json.loads((Path(base_dir) / SPACE_FILE).read_text())["tensors"]
    tensors = [(name, shape, DTYPES[dtype]) for name, shape, dtype in entries]
    if chromosomes == "single":
        return ParamSpace(tensors)
    return ChromosomeSpace(tensors, [0 if ATTENTION.search(name) else 1 for name, _, _ in tensors])


def _write_space(path: Path, space: ParamSpace) -> None:
    tensors = [[s.name, list(s.shape), DTYPE_NAMES[s.dtype]] for s in space]
    path.write_text(json.dumps({"tensors": tensors}, indent=0))


@functools.lru_cache(maxsize=4)
def _base_parts(base_dir: str, dtype: str, device: str) -> BaseParts:
    return BaseParts(base_dir, COMPUTE_DTYPES[dtype], device)


@functools.lru_cache(maxsize=16)
def _vae_scale_factor(base_dir: str) -> int:
    """2 to the number of the VAE's blocks less one (diffusers' rule); 8 without a readable VAE config."""
    vae = Path(base_dir) / "vae" / "config.json"
    if not vae.is_file():
        return 8
    return 2 ** (len(files.read_json(vae).get("block_out_channels", [0, 0, 0, 0])) - 1)


@functools.lru_cache(maxsize=16)
def _native_size(base_dir: str) -> int:
    """The UNet's ``sample_size`` in pixels (latent side times the VAE's factor)."""
    sample = files.read_json(Path(base_dir) / files.UNET / "config.json").get("sample_size", 64)
    side = sample[0] if isinstance(sample, list) else sample
    return int(side) * _vae_scale_factor(base_dir)


# --- argument checks ---------------------------------------------------------------------------------------


def _check_settings(config: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """Unknown fields refused (typos), settings checked; the same dict back."""
    extra = sorted(set(config) - allowed)
    if extra:
        raise ValueError(f"config.{extra[0]}: unknown field; the diffusion config has {', '.join(sorted(allowed))}")
    if config["chromosomes"] not in CHROMOSOMES:
        raise ValueError(f"config.chromosomes: expected one of {', '.join(CHROMOSOMES)}, got {config['chromosomes']!r}")
    if config["dtype"] not in COMPUTE_DTYPES:
        raise ValueError(f"config.dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {config['dtype']!r}")
    for field in ("steps", "batch_size", "max_steps", "max_images"):
        if not is_int(config[field]) or config[field] < 1:
            raise ValueError(f"config.{field}: expected a positive integer, got {config[field]!r}")
    if not is_int(config["seed"]) or config["seed"] < 0:
        raise ValueError(f"config.seed: expected an integer >= 0, got {config['seed']!r}")
    guidance = config["guidance"]
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not math.isfinite(guidance):
        raise ValueError(f"config.guidance: expected a finite number, got {guidance!r}")
    for field in SCORER_DIRS.values():
        value = config.get(field)
        if value is not None and (not isinstance(value, str) or not Path(value).is_absolute()):
            raise ValueError(f"config.{field}: expected an absolute directory path, got {value!r}")
    return config


def _check_strings(values: Any, field: str) -> None:
    if not isinstance(values, list | tuple):
        raise ValueError(f"{field}: expected a list of strings, got {type(values).__name__}")
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{field}[{i}]: expected a non-empty string, got {v!r}")
