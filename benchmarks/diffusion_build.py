"""Small text-to-image pipelines of standard diffusers and transformers classes, built locally.

Nothing is downloaded: the CLIP-style BPE tokenizer is trained here on the prompts' words (in
English and Japanese, words separated by spaces as CLIP's pre-tokenizer needs), and every weight is
drawn from a seeded generator. ``save_pipeline`` writes the layout ``DiffusionPipeline.from_pretrained``
loads: ``model_index.json`` and one folder per component, weights in safetensors.

Two sizes: ``TEST`` builds in about a second (the tests' pipelines), ``BENCH`` is the experiment's
(a 262K-parameter UNet on 4x8x8 latents of 16x16 images: a quarter of the size
``../shared/notes/diffusion-on-cpu.md`` measured, so that a build fits a shared 2-core machine).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ENGLISH = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
JAPANESE = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九")
NUMERALS = tuple(str(d) for d in range(10))
NUMBER_WORDS = {"en": ENGLISH, "ja": JAPANESE, "num": NUMERALS}
# Prompt templates per language: the experiment trains on "train" and evaluates on "test" (held out).
# "num" (numerals, "a handwritten 7") is the base's: it learns to follow text, the specialists learn words.
TEMPLATES = {
    "num": {"train": ("a handwritten {}", "the digit {}", "{}", "a picture of {}"), "test": ("number {}",)},
    "en": {
        "train": ("a handwritten {}", "the digit {}", "a picture of the number {}", "{} written by hand"),
        "test": ("an image of a handwritten {}", "the number {}"),
    },
    "ja": {
        "train": ("手書き の {}", "数字 の {}", "{} の 絵", "手 で 書いた {}"),
        "test": ("手書き の 数字 {}", "{} の 画像"),
    },
}
MAX_PROMPT_TOKENS = 16  # the pipeline pads every prompt to this length
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class Size:
    """Widths of the pipeline's parts (image side in pixels; the VAE halves it once per extra block)."""

    text_hidden: int
    text_layers: int
    unet_channels: tuple[int, ...]
    vae_channels: tuple[int, ...]
    groups: int  # GroupNorm groups: must divide every channel count
    image_size: int = 16
    latent_channels: int = 4


TEST = Size(text_hidden=32, text_layers=1, unet_channels=(8, 16), vae_channels=(8, 16), groups=4)
BENCH = Size(text_hidden=64, text_layers=2, unet_channels=(16, 32), vae_channels=(16, 32), groups=16)
SIZES = {"test": TEST, "bench": BENCH}


def prompts(language: str, split: str, digit: int) -> list[str]:
    """Every prompt of one language and template split for ``digit``."""
    return [t.format(NUMBER_WORDS[language][digit]) for t in TEMPLATES[language][split]]


def corpus() -> list[str]:
    """Every prompt the experiment uses, in both languages: the tokenizer's training text."""
    return [p for lang in TEMPLATES for split in ("train", "test") for d in range(10) for p in prompts(lang, split, d)]


def train_tokenizer(texts: list[str] | None = None, vocab_size: int = 1000) -> CLIPTokenizer:
    """A CLIP BPE tokenizer (CLIP's normaliser and split, byte level, ``</w>`` word ends) trained on ``texts``.

    Every byte is in the vocabulary with and without ``</w>``, so any text encodes.
    """
    reference = CLIPTokenizer()  # an empty vocabulary: only its normaliser and pre-tokenizer are used
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = reference.backend_tokenizer.normalizer
    bpe.pre_tokenizer = reference.backend_tokenizer.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(texts if texts is not None else corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    for char in sorted(alphabet):
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_PROMPT_TOKENS)


def text_encoder(tokenizer: CLIPTokenizer, size: Size, seed: int) -> CLIPTextModel:
    """A randomly initialised CLIP text encoder whose special token ids are the tokenizer's.

    Token embeddings are drawn at unit scale (CLIP's init uses 0.02, as for positions): a frozen random
    encoder then keeps each word's identity ahead of its position, so a UNet learns to follow words sooner.
    """
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=2 * size.text_hidden,
        num_hidden_layers=size.text_layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
    return model


def unet(size: Size, seed: int) -> UNet2DConditionModel:
    """A UNet with cross-attention at the low-resolution level and the mid block (cheap on a CPU)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=size.image_size // 2 ** (len(size.vae_channels) - 1),
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(size.unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(size.unet_channels) - 1) + ("UpBlock2D",),
        block_out_channels=size.unet_channels,
        layers_per_block=1,
        cross_attention_dim=size.text_hidden,
        attention_head_dim=8,
        norm_num_groups=size.groups,
    )


def vae(size: Size, seed: int) -> AutoencoderKL:
    """A one-channel (grey) VAE: each block after the first halves the image side."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * len(size.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(size.vae_channels),
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=size.latent_channels,
        norm_num_groups=size.groups,
        sample_size=size.image_size,
    )


def scheduler() -> DDIMScheduler:
    """DDIM with Stable Diffusion's schedule; ``steps_offset=1`` and no clipping, as the pipeline expects."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def assemble(
    tokenizer: CLIPTokenizer, encoder: CLIPTextModel, model: UNet2DConditionModel, autoencoder: AutoencoderKL
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline of these parts, without safety checker or feature extractor."""
    return StableDiffusionPipeline(
        vae=autoencoder,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=model,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def random_pipeline(size: Size = TEST, seed: int = 0) -> StableDiffusionPipeline:
    """A pipeline of randomly initialised parts (the UNet's init depends on ``seed``)."""
    tokenizer = train_tokenizer()
    return assemble(tokenizer, text_encoder(tokenizer, size, seed), unet(size, seed + 1), vae(size, seed + 2))


def save_pipeline(pipeline: StableDiffusionPipeline, directory: Path) -> Path:
    """``save_pretrained`` in safetensors: the directory ``DiffusionPipeline.from_pretrained`` loads."""
    pipeline.save_pretrained(directory, safe_serialization=True)
    return Path(directory)


def random_unet_dir(directory: Path, size: Size = TEST, seed: int = 0) -> Path:
    """A UNet folder (``config.json``, ``diffusion_pytorch_model.safetensors``) with random weights."""
    unet(size, seed).save_pretrained(directory, safe_serialization=True)
    return Path(directory)


def random_clip(directory: Path, seed: int = 0) -> Path:
    """A tiny randomly initialised ``CLIPModel`` (16-pixel images) and its tokenizer, as the ``clip`` scorer loads."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = train_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "max_position_embeddings": MAX_PROMPT_TOKENS, "projection_dim": 16}
    text |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    text |= {"pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"image_size": 16, "patch_size": 8, "projection_dim": 16}
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return Path(directory)
