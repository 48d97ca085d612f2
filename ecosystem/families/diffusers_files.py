"""diffusers pipeline directories: which files hold the UNet, how a UNet is checked against the base's.

A pipeline directory (``save_pretrained``'s layout) holds ``model_index.json`` and one folder per
component; the UNet folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or shards
listed by ``diffusion_pytorch_model.safetensors.index.json``, or one variant such as ``.fp16``).
Checks raise ``RegistrationRefused`` naming the first mismatch; pickles are never opened.
"""

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecosystem.errors import RegistrationRefused
from ecosystem.families.hf_files import indexed_shards, read_json
from m2n2.checkpoint import read_header
from m2n2.space import ParamSpace

MODEL_INDEX = "model_index.json"
UNET = "unet"
WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
VARIANT = re.compile(r"^diffusion_pytorch_model\.[A-Za-z0-9_]+\.safetensors$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
CONVERT_HINT = "save it with unet.save_pretrained(dir, safe_serialization=True)"
# Libraries a pipeline's components may come from: anything else would mean running repository code.
LIBRARIES = ("diffusers", "transformers")


def check_pipeline(directory: Path) -> dict[str, Any]:
    """A base pipeline directory's ``model_index.json``, refused if it needs custom code or has no UNet."""
    if not (directory / MODEL_INDEX).is_file():
        raise RegistrationRefused(f"{directory}: no {MODEL_INDEX} (save the pipeline with save_pretrained)")
    index = read_json(directory / MODEL_INDEX)
    import diffusers

    if not hasattr(diffusers, str(index.get("_class_name"))):
        raise RegistrationRefused(f"{MODEL_INDEX}: pipeline class {index.get('_class_name')!r} is not in diffusers")
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if value[0] not in LIBRARIES:
            raise RegistrationRefused(f"{MODEL_INDEX}: component {name!r} comes from {value[0]!r} (custom code)")
        if (directory / name).is_dir() and any((directory / name).glob("*.py")):
            raise RegistrationRefused(f"{name}/: holds Python files (custom code); they are never run")
    pickles = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise RegistrationRefused(
            f"{pickles[0]}: pickle-based weights are never loaded; save the pipeline in safetensors"
        )
    if not isinstance(index.get(UNET), list) or index[UNET][0] != "diffusers":
        raise RegistrationRefused(f"{MODEL_INDEX}: no diffusers 'unet' component; only UNet pipelines are supported")
    return index


def unet_dir(directory: Path) -> Path:
    """The UNet folder of a pipeline directory, or the directory itself when it is one."""
    if (directory / MODEL_INDEX).is_file():
        if not (directory / UNET).is_dir():
            raise RegistrationRefused(f"{directory}: the pipeline has no {UNET}/ folder")
        return directory / UNET
    return directory


def weight_files(directory: Path) -> list[Path]:
    """The UNet folder's safetensors files: the standard name, the index's shards, or one variant."""
    if (directory / WEIGHTS).is_file():
        return [directory / WEIGHTS]
    if (directory / WEIGHTS_INDEX).is_file():
        return indexed_shards(directory, WEIGHTS_INDEX)
    variants = sorted(p for p in directory.glob("*.safetensors") if VARIANT.match(p.name))
    if len(variants) == 1:
        return variants
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise RegistrationRefused(f"{pickles[0]}: pickle-based weights are never loaded; {CONVERT_HINT}")
    found = ", ".join(p.name for p in variants)
    extra = f" (several variants: {found}; keep one)" if variants else ""
    raise RegistrationRefused(f"{directory}: no {WEIGHTS} or {WEIGHTS_INDEX}{extra}")


def unet_class(config_dir: Path) -> type[nn.Module]:
    """The diffusers model class a UNet ``config.json`` names."""
    import diffusers

    name = read_json(config_dir / "config.json").get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise RegistrationRefused(f"config.json: _class_name {name!r} is not a diffusers model class")
    return cls


def empty_unet(config_dir: Path) -> nn.Module:
    """The UNet a ``config.json`` describes, on the meta device (no memory, no random init)."""
    cls = unet_class(config_dir)
    config = cls.load_config(config_dir)
    with torch.device("meta"):
        return cls.from_config(config)


def full_config(config_dir: Path) -> dict[str, Any]:
    """The UNet's config with every default filled in (so an omitted default equals a written one)."""
    return {k: v for k, v in dict(empty_unet(config_dir).config).items() if not k.startswith("_")}


def check_unet_config(base_unet: Path, directory: Path) -> None:
    """Refuse a UNet whose class or architecture field differs from the base's, naming the first one."""
    if not (directory / "config.json").is_file():
        raise RegistrationRefused(f"{directory}: no config.json (save_pretrained writes one next to the weights)")
    mine, theirs = read_json(base_unet / "config.json"), read_json(directory / "config.json")
    if mine.get("_class_name") != theirs.get("_class_name"):
        raise RegistrationRefused(
            f"config.json: _class_name is {theirs.get('_class_name')!r}, the base's is {mine.get('_class_name')!r}"
        )
    mine, theirs = full_config(base_unet), full_config(directory)
    for field in sorted(set(mine) | set(theirs)):
        if _normal(mine.get(field)) != _normal(theirs.get(field)):
            raise RegistrationRefused(
                f"config.json: {field} is {theirs.get(field)!r}, the base's is {mine.get(field)!r}"
            )


def _normal(value: Any) -> Any:
    """Tuples and lists compare equal (JSON has only lists)."""
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value


def unet_space(directory: Path, files: list[Path]) -> ParamSpace:
    """The UNet's tensors (names, shapes, dtypes from the headers) in the model's state-dict order."""
    found = {}
    for path in files:
        for spec in read_header(path)[0]:
            found[spec.name] = spec
    model = empty_unet(directory)
    order = list(model.state_dict())
    unknown = sorted(set(found) - set(order))
    if unknown:
        raise RegistrationRefused(f"tensor {unknown[0]!r} is not in {type(model).__name__}'s state dict")
    missing = [name for name in order if name not in found]
    if missing:
        raise RegistrationRefused(f"the UNet lacks tensor {missing[0]!r} of {type(model).__name__}")
    return ParamSpace([(name, found[name].shape, found[name].dtype) for name in order])


def copy_pipeline(source: Path, target: Path, skip: set[str]) -> list[Path]:
    """Copy a pipeline directory except the UNet's weights and the names in ``skip``; the files written."""
    written = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or relative.as_posix() in skip or path.suffix in PICKLE_SUFFIXES:
            continue
        if relative.parts[0] == UNET and relative.name != "config.json":
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative)
        written.append(target / relative)
    return written
