"""The admin token: where it comes from, and the middleware that asks for it.

``M2N2_ADMIN_TOKEN`` wins. Without it, the first process to start generates a token,
stores it in ``<data_dir>/admin-token`` (mode 0600) and prints it once; every other
worker, and every later start, reads that file.
"""

import hmac
import os
import secrets
import sys
from collections.abc import Callable, Collection
from pathlib import Path

from ecosystem.settings import Settings
from service.http import ASGIApp, Receive, Scope, Send, send_error

TOKEN_FILE = "admin-token"


def admin_token(settings: Settings) -> str:
    """The bearer token mutating calls must present."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if _create(path, token := secrets.token_urlsafe(32)):
        print(f"m2n2: generated the admin token, stored in {path} (mode 0600): {token}", file=sys.stderr, flush=True)
        return token
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise RuntimeError(f"{path} is empty: delete it to generate a new token, or set M2N2_ADMIN_TOKEN")
    return token


def _create(path: Path, token: str) -> bool:
    """Write ``token`` to ``path`` unless it exists: False when another process got there first.

    The token is written under a temporary name and hard-linked into place, so no reader
    ever sees an empty or partial file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class BearerAuth:
    """ASGI middleware: the listed paths need one ``Authorization: Bearer <token>`` (401 without, 403 when wrong)."""

    def __init__(self, app: ASGIApp, token: Callable[[], str], paths: Collection[str]) -> None:
        self.app, self.paths = app, frozenset(paths)
        self._token_source, self._token = token, b""

    @property
    def token(self) -> bytes:
        """Read on first use: the middleware is built before the worker has settled the token."""
        if not self._token:
            self._token = self._token_source().encode()
        return self._token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        headers = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(headers) > 1:  # which one counts would depend on who reads it: a proxy and this server may differ
            return await send_error(scope, send, 400, "send one Authorization header, not several")
        scheme, _, presented = (headers[0] if headers else b"").partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            message = f"{scope['path']} needs the header 'Authorization: Bearer <admin token>'"
            return await send_error(scope, send, 401, message, [(b"www-authenticate", b'Bearer realm="m2n2"')])
        if not hmac.compare_digest(presented.strip(), self.token):
            return await send_error(scope, send, 403, "the bearer token is not the admin token")
        return await self.app(scope, receive, send)
