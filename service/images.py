"""``POST /v1/images/generations``: the champion draws images, for families whose ``api`` is "images".

Mounted on the OpenAI-compatible app at ``/v1``, so requests are validated and refused (422 naming
the parameter) in OpenAI's error shape, and answers carry ``X-Model-Version``. Drawing runs in a
worker thread: the event loop keeps answering other requests meanwhile.
"""

import base64
import time
from typing import Any

import anyio
from fastapi import APIRouter
from starlette.responses import JSONResponse

from ecosystem.families.diffusion import png, random_seed
from service.champion import Served
from service.completions import ERRORS, OpenAIError, Worker
from service.http import VERSION_HEADER
from service.image_schemas import ImageRequest, ImagesResponse

router = APIRouter()


def image_champion(worker: Any) -> Served:
    """The served champion, if it draws images; else the refusal that says why."""
    served = worker.watcher.current
    if served is None:
        raise OpenAIError(503, "no champion is loaded yet; /readyz answers 200 once one is", kind="unavailable")
    if served.family.api != "images":
        message = f"the served model family {served.family.name!r} does not draw images; see /v1/models or /predict"
        raise OpenAIError(404, message, kind="not_found_error")
    return served


def check_limits(served: Served, body: ImageRequest) -> tuple[int, int, int]:
    """(width, height, steps) within the served config's limits; else a 422 naming the parameter."""
    config = served.family.validate_config(served.config)
    if body.n > config["max_images"]:
        raise OpenAIError(422, f"n is {body.n}; this model draws at most {config['max_images']} per request", "n")
    steps = body.steps if body.steps is not None else config["steps"]
    if steps > config["max_steps"]:
        raise OpenAIError(422, f"steps is {steps}; this model takes at most {config['max_steps']}", "steps")
    width, height = body.dimensions() or (config["image_size"], config["image_size"])
    multiple = served.family.size_multiple(config)
    for side in (width, height):
        if not multiple <= side <= config["max_size"] or side % multiple:
            message = (
                f"size {width}x{height}: each side must be a multiple of {multiple} "
                f"from {multiple} to {config['max_size']} pixels"
            )
            raise OpenAIError(422, message, "size")
    return width, height, steps


@router.post("/images/generations", responses={200: {"model": ImagesResponse}, **ERRORS})
async def generations(body: ImageRequest, worker: Worker) -> JSONResponse:
    """Draw ``n`` images of the prompt with the champion; image i's noise is seeded ``seed + i``."""
    served = image_champion(worker)
    width, height, steps = check_limits(served, body)
    seed = body.seed if body.seed is not None else random_seed()
    seeds = [(seed + i) % 2**63 for i in range(body.n)]

    def draw() -> list[bytes]:
        images = served.family.draw(
            served.module,
            served.config,
            [body.prompt] * body.n,
            seeds,
            width=width,
            height=height,
            steps=steps,
            guidance=body.guidance,
            negative_prompt=body.negative_prompt,
        )
        return [png(image) for image in images]

    try:
        pngs = await anyio.to_thread.run_sync(draw)
    except ValueError as error:  # the family refused an argument the checks above let through
        raise OpenAIError(422, str(error)) from None
    data = [
        {"b64_json": base64.b64encode(p).decode(), "seed": s, "revised_prompt": None}
        for p, s in zip(pngs, seeds, strict=True)
    ]
    return JSONResponse({"created": int(time.time()), "data": data}, headers={VERSION_HEADER: str(served.version)})
