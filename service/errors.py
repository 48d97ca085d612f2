"""Ecosystem errors as HTTP answers: the status says who must act, the message says what to fix.

One table (``STATUS``) maps exception classes to statuses; ``answers_errors`` applies it to
every route, so an endpoint raises the ecosystem's own errors and never builds a response.
"""

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from ecosystem.errors import Conflict, EcosystemError, InvalidInput, NotFound

log = logging.getLogger(__name__)


class NotReady(EcosystemError):
    """This worker has no champion loaded yet (503: retry once /readyz answers 200)."""


# First match wins: a registration refusal or any invalid input is the caller's to fix (422).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 422),
    (ValueError, 422),  # a family's checks of configs, points and inputs
    (NotReady, 503),
)


def status_of(error: BaseException) -> int | None:
    """The HTTP status for a user's mistake, or None for a server fault."""
    if isinstance(error, ValidationError):  # request bodies are validated before the method runs: this is ours
        return None
    return next((status for kind, status in STATUS if isinstance(error, kind)), None)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def invalid(error: ValidationError, prefix: str) -> InvalidInput:
    """A validation error of a value the route checks itself, as ``InvalidInput`` naming each field under ``prefix``."""
    fields = "; ".join(
        f"{'.'.join([prefix, *map(str, e['loc'])])}: {e['msg']}" for e in error.errors(include_url=False)
    )
    return InvalidInput(f"invalid request: {fields}")


def answers_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the ecosystem's errors raised by an API method (sync or async) into 4xx/503 JSON; others stay 500."""

    def refused(error: Exception) -> JSONResponse:
        status = status_of(error)
        if status is None:
            raise error
        log.info("%s refused (%d): %s", func.__name__, status, error)
        return error_response(status, " ".join(str(error).split()) or type(error).__name__)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except Exception as error:
                return refused(error)

        return wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as error:
            return refused(error)

    return sync_wrapper
