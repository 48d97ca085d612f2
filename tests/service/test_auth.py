"""The bearer-token middleware on its own: one Authorization header, the right token, or a clear refusal."""

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from service.auth import BearerAuth

TOKEN = "the-admin-token"


async def protected_app(scope, receive, send) -> None:
    await PlainTextResponse("done")(scope, receive, send)


def call(headers: list[tuple[str, str]]) -> httpx.Response:
    app = BearerAuth(protected_app, token=lambda: TOKEN, paths={"/promote"})
    return TestClient(app).post("/promote", headers=headers)  # its own loop thread: safe beside tests holding one


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("Authorization", f"Bearer {TOKEN}")], 200),
        ([], 401),
        ([("Authorization", "Bearer wrong")], 403),
        ([("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer wrong")], 400),
        ([("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {TOKEN}")], 400),
    ],
)
def test_one_authorization_header_with_the_token(headers, status) -> None:
    response = call(headers)
    assert response.status_code == status, response.text
    if status == 400:
        assert "one Authorization header" in response.text
