"""What a request must be before BentoML parses it: its media type, its uploads, a client that stays.

BentoML picks a body parser from the Content-Type alone (JSON, multipart or a URL-encoded form, on
any route), fails with a 500 on a multipart type without a boundary, and, given text where a file
is declared, downloads that text as a URL. ``RequestGuard`` lets each route receive only the media
type it declares, lets file fields carry only files (the server never fetches a URL for a client),
and records a client that disconnects before its body is complete as a disconnect (status 499 in
the access log, ``m2n2_client_disconnects_total``) rather than as a server error.
"""

import logging
from collections.abc import Mapping

from python_multipart.multipart import MultipartParser, parse_options_header

from ecosystem import metrics
from service.http import ASGIApp, Message, Receive, Refused, Scope, Send, answer_refusals, send_error

log = logging.getLogger(__name__)

JSON = "application/json"
MULTIPART = "multipart/form-data"
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection before the answer


def media_problem(declared: str, content_type: bytes) -> tuple[int, str] | None:
    """Why a request's Content-Type does not fit a route declaring ``declared``, or None when it does.

    A JSON route also takes a request without a Content-Type (BentoML reads it as JSON).
    """
    media, options = parse_options_header(content_type)
    media = media.decode("latin-1").lower()
    if declared == JSON and media in ("", JSON):
        return None
    if declared == MULTIPART and media == MULTIPART:
        return None if options.get(b"boundary") else (400, "a multipart/form-data body needs a boundary parameter")
    return 415, f"this route takes Content-Type: {declared}, not {media or 'none'}"


class _FileFields:
    """Reads a multipart body's part headers as it streams in; refuses text in a field declared as a file."""

    def __init__(self, boundary: bytes, file_fields: frozenset[str]) -> None:
        self.file_fields = file_fields
        self.refusal: Refused | None = None
        self._field, self._value, self._headers = b"", b"", {}
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except Exception as error:  # python-multipart's parse errors name what is malformed
            self.refusal = Refused(400, f"malformed multipart body: {error}")
        if self.refusal is not None:
            raise self.refusal

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("latin-1")
        if name in self.file_fields and b"filename" not in options:
            self.refusal = Refused(
                422, f"{name}: upload the file as a multipart file part (with a filename), not as text"
            )


class RequestGuard:
    """ASGI middleware for the routes in ``media_types``: declared media types, file-only uploads, disconnects."""

    def __init__(self, app: ASGIApp, media_types: Mapping[str, str], file_fields: Mapping[str, set[str]]) -> None:
        self.app, self.media_types = app, dict(media_types)
        self.file_fields = {route: frozenset(fields) for route, fields in file_fields.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("path", "")
        if scope["type"] != "http" or route not in self.media_types:
            return await self.app(scope, receive, send)
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if problem := media_problem(self.media_types[route], content_type):
            return await send_error(scope, send, *problem)
        fields = None
        if self.file_fields.get(route):
            boundary = parse_options_header(content_type)[1][b"boundary"]
            fields = _FileFields(boundary, self.file_fields[route])
        complete = False

        async def guarded_receive() -> Message:
            nonlocal complete
            message = await receive()
            if message["type"] == "http.disconnect" and not complete:
                raise Refused(CLIENT_CLOSED, "the client disconnected before sending the whole body")
            if message["type"] == "http.request" and not complete:
                if fields is not None:
                    fields.feed(message.get("body", b""))
                complete = not message.get("more_body", False)
            return message

        refusal = await answer_refusals(self.app, scope, guarded_receive, send)
        if refusal is not None and refusal.status == CLIENT_CLOSED:
            metrics.CLIENT_DISCONNECTS.labels(route).inc()
            log.info("%s: %s", route, refusal.message)
