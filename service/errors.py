"""Ecosystem errors as HTTP answers: the status says who must act, the message says what to fix."""

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pydantic import ValidationError
from starlette.responses import JSONResponse

from ecosystem.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# First match wins: a registration refusal or any invalid input is the caller's to fix (422).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 422),
    (ValueError, 422),  # a family's checks of configs and points
)


def status_of(error: BaseException) -> int | None:
    """The HTTP status for a user's mistake, or None for a server fault."""
    if isinstance(error, ValidationError):  # request bodies are validated before the method runs: this is ours
        return None
    return next((status for kind, status in STATUS if isinstance(error, kind)), None)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def answers_errors(func: Callable[P, R]) -> Callable[P, R | JSONResponse]:
    """Turn the ecosystem's errors raised by an API method into 4xx JSON answers; anything else stays a 500."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return func(*args, **kwargs)
        except Exception as error:
            status = status_of(error)
            if status is None:
                raise
            log.info("%s refused (%d): %s", func.__name__, status, error)
            return error_response(status, " ".join(str(error).split()) or type(error).__name__)

    return wrapper
