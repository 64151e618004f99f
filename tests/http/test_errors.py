"""Everywhere: wrong methods and paths, broken internals and the logs give nothing away."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.checks import assert_error, settings_secrets
from tests.support import PASSWORD, FakeClock, Register, RegisterAndLogin

ROUTES = {
    "/register": "POST",
    "/login": "POST",
    "/refresh": "POST",
    "/logout": "POST",
    "/profile": "GET, PATCH",
}


WRONG_METHODS = [
    (method, path)
    for path, allowed in ROUTES.items()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    if method not in allowed.split(", ")
]


async def test_a_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    """Each of the five routes, under each method it does not serve."""
    for method, path in WRONG_METHODS:
        response = await client.request(method, path, json={"email": "a@b.c"})

        assert_error(response, 405, "method_not_allowed")
        for allowed in ROUTES[path].split(", "):
            assert allowed in response.headers["allow"], (method, path)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/admin/users", {"GET", "HEAD", "POST"}),
        (
            "POST",
            "/admin/users/00000000-0000-0000-0000-000000000000",
            {"GET", "HEAD", "PATCH", "DELETE"},
        ),
        ("GET", "/admin/roles/reader", {"PUT", "DELETE"}),
        ("GET", "/sessions/00000000-0000-0000-0000-000000000000", {"PATCH", "DELETE"}),
    ],
)
async def test_a_405_names_every_method_of_a_path_served_by_several_routes(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    """A path whose methods are split over routes: Allow names them all, not the first route's."""
    response = await client.request(method, path)

    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == allowed


async def test_an_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/profile/x", "/%00", "/admin", "/.env", "/login.php"):
        response = await client.get(path)

        assert_error(response, 404, "not_found")


async def test_a_broken_database_schema_gives_a_generic_500_without_sql(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    register_and_login: RegisterAndLogin,
) -> None:
    """A real failure inside a query (the table is gone): the client learns nothing of it."""
    user, pair = await register_and_login(client)
    await db.execute("DROP TABLE refresh_tokens")

    responses = [
        await client.post("/refresh", json={"refresh_token": pair["refresh_token"]}),
        await client.post("/login", json={"email": user["email"], "password": PASSWORD}),
    ]

    for response in responses:
        body = assert_error(
            response, 500, "server_error", secrets=(*settings_secrets(settings), PASSWORD)
        )
        assert "refresh_tokens" not in body["error_description"]
        assert "relation" not in response.text


async def test_logs_carry_ids_but_never_tokens_passwords_or_secrets(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    register: Register,
) -> None:
    """Registration, good and failed logins, refresh, reuse detection and logout, all logged
    without a single token, password or secret in any message or attribute."""
    caplog.set_level(logging.DEBUG)
    user = await register(client)
    await client.post("/login", json={"email": user["email"], "password": "wrong password!"})
    await client.post("/login", json={"email": "nobody@example.com", "password": PASSWORD})
    pair = (await client.post("/login", json={"email": user["email"], "password": PASSWORD})).json()
    child = (await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    clock.advance(60)
    replay = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    second = (
        await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    ).json()
    await client.post("/logout", json={"refresh_token": second["refresh_token"]})
    assert replay.status_code == 403

    forbidden = {
        PASSWORD,
        "wrong password!",
        *settings_secrets(settings),
        *(pair[key] for key in ("access_token", "refresh_token")),
        *(child[key] for key in ("access_token", "refresh_token")),
        *(second[key] for key in ("access_token", "refresh_token")),
    }
    logged = [_everything_in(record) for record in caplog.records]
    messages = [record.getMessage() for record in caplog.records]
    assert any("reuse" in message for message in messages), messages
    assert any("login failed" in message for message in messages), messages
    for text in logged:
        for value in forbidden:
            assert value not in text
        assert "eyJ" not in text


def _everything_in(record: logging.LogRecord) -> str:
    attributes: dict[str, Any] = dict(vars(record))
    attributes["message"] = record.getMessage()
    return repr(attributes)
