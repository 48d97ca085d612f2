"""ASGI middleware around the BentoML app: error answers, body limits, 422 for invalid input.

Each is a plain ASGI wrapper, registered with ``add_asgi_middleware``, so it sees every
request before BentoML parses it and every response before it leaves.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from service.openai_schemas import error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

VERSION_HEADER = "X-Model-Version"


OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible routes answer errors in OpenAI's shape


def error_json(path: str, message: str) -> dict[str, Any]:
    """The error body of a route: ``{"error": message}``, or OpenAI's ``{"error": {"message", ...}}`` under /v1."""
    return error_body(message) if path.startswith(OPENAI_PREFIX) else {"error": message}


async def send_error(
    scope: Scope, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()
) -> None:
    """Answer ``status`` with the route's error body naming ``message``."""
    body = json.dumps(error_json(scope["path"], message)).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class Refused(BaseException):
    """Ends a request from inside its body stream with an error answer.

    A BaseException, so it passes the ``except Exception`` of BentoML's endpoint and reaches the
    middleware that raised it (or ``service.guard``), which answers ``status`` unless an answer
    has already started.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def answer_refusals(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> Refused | None:
    """Run ``app``; a ``Refused`` raised inside it becomes its error answer (returned, for logging)."""
    started = False

    async def tracked_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracked_send)
    except Refused as refusal:
        if not started:
            await send_error(scope, send, refusal.status, refusal.message)
        return refusal
    return None


class BodyLimit:
    """413 for a request body over ``max_bytes``: at once from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(scope, send, 413, self._message(int(length)))
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise Refused(413, self._message(received))
            return message

        await answer_refusals(self.app, scope, counted_receive, send)

    def _message(self, n_bytes: int) -> str:
        return (
            f"the request body ({n_bytes} bytes or more) exceeds the limit of {self.max_bytes} bytes "
            "(M2N2_SERVICE__MAX_REQUEST_BYTES); register large checkpoints by path instead"
        )


class ResponseRewriter:
    """Buffers the responses of the routes it cares about so ``rewrite`` can change status and headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def wants(self, scope: Scope) -> bool:
        raise NotImplementedError

    def rewrite(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, list, bytes]:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.wants(scope):
            return await self.app(scope, receive, send)
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            status, headers, new_body = self.rewrite(start["status"], list(start.get("headers", [])), body)
            if new_body is not body:
                headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(new_body)).encode()))
                body = new_body
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered_send)


class InvalidInputStatus(ResponseRewriter):
    """BentoML answers request-validation errors with 400; they become 422 with a message naming each field."""

    def __init__(self, app: ASGIApp, paths: set[str]) -> None:
        super().__init__(app)
        self.paths = paths

    def wants(self, scope: Scope) -> bool:
        return scope["path"] in self.paths

    def rewrite(self, status: int, headers: list, body: bytes) -> tuple[int, list, bytes]:
        if status != 400:
            return status, headers, body
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            return status, headers, body
        if not isinstance(detail, list):
            return status, headers, body
        fields = "; ".join(f"{'.'.join(map(str, e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in detail)
        return 422, headers, json.dumps({"error": f"invalid request: {fields}", "detail": detail}).encode()


class ReadinessReport(ResponseRewriter):
    """``/readyz`` answers with what this worker serves (``report()``), not just its status.

    A worker that could not load the newest champion stays ready, serving the last good one;
    the body says so (``"behind": true`` and the error), as do ``/status`` and a metric.
    """

    def __init__(self, app: ASGIApp, report: Callable[[], dict[str, Any]], path: str = "/readyz") -> None:
        super().__init__(app)
        self.report, self.path = report, path

    def wants(self, scope: Scope) -> bool:
        return scope["path"] == self.path

    def rewrite(self, status: int, headers: list, body: bytes) -> tuple[int, list, bytes]:
        if status != 200:
            return status, headers, body
        headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
        headers.append((b"content-type", b"application/json"))
        return status, headers, json.dumps({"ready": True, **self.report()}).encode()
