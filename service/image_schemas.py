"""Request and response bodies of ``POST /v1/images/generations`` (OpenAI's images shape, plus sampler settings).

OpenAI's fields ``prompt``, ``n``, ``size`` and ``response_format`` (``b64_json`` only: this server
keeps no files to link to) are joined by ``negative_prompt``, ``steps``, ``guidance`` and ``seed``.
Any other field is refused (422) rather than ignored. Limits that depend on the served model (sizes,
steps, images per request) are checked against the family's config by the route.
"""

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
MAX_N = 16  # a hard ceiling; the served config's max_images is usually lower


class ImageRequest(BaseModel):
    """What to draw, how many, at which size, with which sampler settings."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=10_000)] = Field(description="what to draw")
    model: str | None = Field(None, description="any name: the served champion answers")
    n: int = Field(1, ge=1, le=MAX_N, description="images to draw (at most the server's max_images)")
    size: str | None = Field(None, description="'WIDTHxHEIGHT' in pixels; default: the model's native size")
    response_format: Literal["b64_json"] = Field("b64_json", description="base64-encoded PNGs ('url' is not offered)")
    user: str | None = Field(None, description="accepted and ignored")
    negative_prompt: str | None = Field(None, max_length=10_000, description="what to steer away from")
    steps: int | None = Field(None, ge=1, description="denoising steps (default: the model's; at most max_steps)")
    guidance: float | None = Field(None, ge=0, le=50, description="classifier-free guidance scale (1: none)")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="image i starts from noise seeded seed + i: the same seed, the same image"
    )

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not SIZE.match(value):
            raise ValueError("expected 'WIDTHxHEIGHT', e.g. '16x16'")
        return value

    def dimensions(self) -> tuple[int, int] | None:
        """(width, height), or None for the model's native size."""
        if self.size is None:
            return None
        width, height = SIZE.match(self.size).groups()
        return int(width), int(height)


class ImageData(BaseModel):
    """One drawn image."""

    b64_json: str = Field(description="the PNG, base64-encoded")
    seed: int = Field(description="the seed of its noise: send it back to draw the same image")
    revised_prompt: None = Field(None, description="always null: prompts are used as sent")


class ImagesResponse(BaseModel):
    """The images, in order."""

    created: int
    data: list[ImageData]
