"""Assertions shared by the attack tests: what every error answer must and must not be."""

from __future__ import annotations

import json
from typing import Any

import httpx
from tokenrota_server.config import Settings

# Words that only show up in an error body when something leaked: a traceback, SQL, a library.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    "line ",
    "Error:",
    "Exception",
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WHERE",
    "asyncpg",
    "postgres",
    "psycopg",
    "sqlalchemy",
    "jose",
    "argon2",
    "starlette",
    "$argon2",
    "eyJ",  # the start of any JWT
)


def assert_error(
    response: httpx.Response,
    status: int | set[int],
    code: str | None = None,
    *,
    secrets: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The response is a clean JSON error: right status (and code), the two fields only, and
    nothing in it that should not be: no traceback, SQL, library name, token or `secrets`."""
    statuses = {status} if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert isinstance(body["error"], str)
    assert isinstance(body["error_description"], str)
    if code is not None:
        assert body["error"] == code, body
    text = response.text
    for marker in LEAK_MARKERS:
        assert marker.lower() not in text.lower(), (marker, text)
    for secret in secrets:
        if secret:
            assert secret not in text, "a secret or token was echoed"
            # X-Request-ID is random (or the caller's own), so it is left out of the search.
            echoed = [v for k, v in response.headers.multi_items() if k != "x-request-id"]
            assert secret not in str(echoed), "a secret or token was echoed"
    return body


def settings_secrets(settings: Settings) -> tuple[str, str]:
    return str(settings.access_token_secret), str(settings.refresh_token_secret)


async def post_json(client: httpx.AsyncClient, path: str, value: Any) -> httpx.Response:
    """POST `value` as JSON with non-ASCII escaped, so lone surrogates (`\\ud800`) get through."""
    return await client.post(
        path,
        content=json.dumps(value).encode("ascii"),
        headers={"Content-Type": "application/json"},
    )
