"""ASGI middleware around the BentoML app: body limits, 422 for invalid input, the OpenAPI error entries.

Each is a plain ASGI wrapper, registered with ``add_asgi_middleware``, so it sees every
request before BentoML parses it and every response before it leaves.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

VERSION_HEADER = "X-Model-Version"


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``{"error": message}`` with ``status``."""
    body = json.dumps({"error": message}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a request body over ``max_bytes``: at once from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(send, 413, self._message(int(length)))
        received, over = 0, False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True  # the app sees a disconnect; its answer is replaced below
                    return {"type": "http.disconnect"}
            return message

        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if over and not replaced and message["type"] == "http.response.start":
                replaced = True
                return await send_error(send, 413, self._message(received))
            if not replaced:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)

    def _message(self, n_bytes: int) -> str:
        return (
            f"the request body ({n_bytes} bytes or more) exceeds the limit of {self.max_bytes} bytes "
            "(M2N2_SERVICE__MAX_REQUEST_BYTES); register large checkpoints by path instead"
        )


class _ResponseRewriter:
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


class InvalidInputStatus(_ResponseRewriter):
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


class OpenAPIErrors(_ResponseRewriter):
    """Makes the published OpenAPI document list the error answers each route really gives.

    BentoML documents 400, 404 and 500 for every route; this service answers invalid input with
    422 and adds 401/403 (token), 409 (conflict), 413 (body limit) and 503 (no champion yet).
    """

    ERROR: ClassVar[dict] = {
        "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
    }
    MEANING: ClassVar[dict[int, str]] = {
        401: "no bearer token",
        403: "the wrong bearer token",
        404: "an unknown model or task",
        409: "a conflict with the stored state (name taken, already champion, nothing to roll back)",
        413: "the request body is over the size limit",
        422: "invalid input; the message names the field",
        503: "no champion loaded yet",
    }

    def __init__(self, app: ASGIApp, errors: dict[str, set[int]], path: str = "/docs.json") -> None:
        super().__init__(app)
        self.errors, self.path = errors, path

    def wants(self, scope: Scope) -> bool:
        return scope["path"] == self.path

    def rewrite(self, status: int, headers: list, body: bytes) -> tuple[int, list, bytes]:
        if status != 200:
            return status, headers, body
        spec = json.loads(body)
        for route, codes in self.errors.items():
            operation = spec.get("paths", {}).get(route, {}).get("post")
            if operation is None:
                continue
            responses = {k: v for k, v in operation["responses"].items() if k in ("200", "500")}
            for code in sorted(codes):
                responses[str(code)] = {"description": self.MEANING[code], "content": self.ERROR}
            operation["responses"] = responses
        return status, headers, json.dumps(spec).encode()
