"""Cookie transport for browser frontends: the cookie's attributes, rotation through it, the
CSRF checks before any database work, logout clearing it, and CORS for allowed origins only."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests import support
from tests.support import PASSWORD, FakeClock, Register, Serve, TableSnapshot

APP = "https://app.example"
GOOD = {"Origin": APP, "X-Requested-With": "fetch", "Sec-Fetch-Site": "same-site"}
SECURE_NAME = "__Host-refresh_token"


@pytest.fixture
def browser_settings(make_settings: Any) -> Settings:
    """Settings that allow one frontend origin."""
    settings: Settings = make_settings(allowed_origins=(APP,))
    return settings


@pytest.fixture
async def browser(browser_settings: Settings, clock: FakeClock, serve: Serve) -> Any:
    """A client of the service as configured for a browser frontend."""
    async with serve(browser_settings, clock) as client:
        yield client


def set_cookie(response: httpx.Response) -> tuple[str, str, dict[str, str]]:
    """The one Set-Cookie of a response: name, value and attributes (lowercased names)."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    name, _, rest = headers[0].partition("=")
    value, *attributes = [part.strip() for part in rest.split(";")]
    parsed = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        parsed[key.lower()] = val
    assert SimpleCookie(headers[0])  # the header parses as a cookie at all
    return name, value, parsed


async def cookie_login(client: httpx.AsyncClient) -> tuple[dict[str, Any], httpx.Response]:
    user = await support.register(client)
    response = await client.post(
        "/login", json={"email": user["email"], "password": PASSWORD, "use_cookie": True}
    )
    assert response.status_code == 200, response.text
    client.cookies.clear()  # every test sends the cookie by hand, exactly as given
    return user, response


async def post_with_cookie(
    client: httpx.AsyncClient, path: str, value: str, name: str = SECURE_NAME, **kwargs: Any
) -> httpx.Response:
    headers = {**kwargs.pop("headers", GOOD), "Cookie": f"{name}={value}"}
    return await client.post(path, headers=headers, **kwargs)


async def test_login_with_use_cookie_sets_a_host_prefixed_cookie_and_omits_the_token(
    browser: httpx.AsyncClient,
) -> None:
    """__Host-refresh_token; HttpOnly; Secure; SameSite=Strict; Path=/; no Domain; Max-Age."""
    _, response = await cookie_login(browser)

    name, value, attributes = set_cookie(response)
    body = response.json()
    assert name == SECURE_NAME
    assert value.count(".") == 2
    assert "refresh_token" not in body
    assert body["access_token"]
    assert body["refresh_expires_in"] == 604800
    assert response.headers["cache-control"] == "no-store"
    assert attributes["path"] == "/"
    assert attributes["samesite"].lower() == "strict"
    assert attributes["max-age"] == "604800"
    assert "httponly" in attributes
    assert "secure" in attributes
    assert "domain" not in attributes


async def test_login_without_use_cookie_sets_no_cookie(
    browser: httpx.AsyncClient, register: Register
) -> None:
    """The default stays the body transport."""
    user = await register(browser)

    response = await browser.post("/login", json={"email": user["email"], "password": PASSWORD})

    assert "set-cookie" not in response.headers
    assert response.json()["refresh_token"]


async def test_use_cookie_must_be_a_boolean(browser: httpx.AsyncClient, register: Register) -> None:
    """A use_cookie of another type is 422, before any password work."""
    user = await register(browser)

    response = await browser.post(
        "/login", json={"email": user["email"], "password": PASSWORD, "use_cookie": "yes"}
    )

    assert response.status_code == 422


async def test_cookie_secure_false_drops_secure_and_the_prefix(
    make_settings: Any, clock: FakeClock, serve: Serve
) -> None:
    """COOKIE_SECURE=false: the cookie is `refresh_token`, without Secure, otherwise the same."""
    settings = make_settings(allowed_origins=(APP,), cookie_secure=False)
    async with serve(settings, clock) as client:
        _, response = await cookie_login(client)
        name, value, attributes = set_cookie(response)
        refreshed = await post_with_cookie(client, "/refresh", value, name="refresh_token")

    assert name == "refresh_token"
    assert "secure" not in attributes
    assert "httponly" in attributes
    assert refreshed.status_code == 200
    assert set_cookie(refreshed)[0] == "refresh_token"


async def test_refresh_through_the_cookie_rotates_it(
    browser: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The cookie's token is spent and a new cookie carries the child; the body has no token."""
    _, response = await cookie_login(browser)
    _, first, _ = set_cookie(response)

    refreshed = await post_with_cookie(browser, "/refresh", first)

    assert refreshed.status_code == 200, refreshed.text
    name, second, attributes = set_cookie(refreshed)
    assert name == SECURE_NAME
    assert second != first
    assert "refresh_token" not in refreshed.json()
    assert "httponly" in attributes
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL") == 1
    assert (await post_with_cookie(browser, "/refresh", second)).status_code == 200


async def test_a_body_token_needs_no_csrf_headers(
    browser: httpx.AsyncClient, register: Register
) -> None:
    """A token in the body cannot be forged by another site: no Origin needed."""
    user = await register(browser)
    pair = (
        await browser.post("/login", json={"email": user["email"], "password": PASSWORD})
    ).json()

    response = await browser.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    assert response.status_code == 200
    assert "set-cookie" not in response.headers


FORGERIES = {
    "no origin": {"headers": {"X-Requested-With": "fetch"}},
    "foreign origin": {"headers": {**GOOD, "Origin": "https://evil.example"}},
    "null origin": {"headers": {**GOOD, "Origin": "null"}},
    "origin with a path": {"headers": {**GOOD, "Origin": APP + "/"}},
    "no x-requested-with": {"headers": {"Origin": APP}},
    "empty x-requested-with": {"headers": {**GOOD, "X-Requested-With": ""}},
    "cross-site fetch": {"headers": {**GOOD, "Sec-Fetch-Site": "cross-site"}},
    "form body": {
        "headers": {**GOOD, "Content-Type": "application/x-www-form-urlencoded"},
        "content": b"a=b",
    },
    "text/plain body": {
        "headers": {**GOOD, "Content-Type": "text/plain"},
        "content": b'{"refresh_token": ""}',
    },
    "multipart body": {
        "headers": {**GOOD, "Content-Type": "multipart/form-data; boundary=x"},
        "content": b"--x--",
    },
}


@pytest.mark.parametrize("path", ["/refresh", "/logout"])
@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_cookie_requests_get_403_and_the_token_is_not_spent(
    browser: httpx.AsyncClient,
    db: asyncpg.Connection,
    path: str,
    forgery: str,
    table_snapshot: TableSnapshot,
) -> None:
    """Each CSRF check fails alone: 403 csrf_failed, nothing written, the cookie still works."""
    _, response = await cookie_login(browser)
    _, token, _ = set_cookie(response)
    before = await table_snapshot(db)

    forged = await post_with_cookie(browser, path, token, **FORGERIES[forgery])

    assert forged.status_code == 403
    assert forged.json()["error"] == "csrf_failed"
    assert "set-cookie" not in forged.headers
    assert await table_snapshot(db) == before
    assert (await post_with_cookie(browser, "/refresh", token)).status_code == 200


async def test_without_allowed_origins_the_cookie_is_never_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """No ALLOWED_ORIGINS (the test default): every cookie request is csrf_failed."""
    _, response = await cookie_login(client)
    _, token, _ = set_cookie(response)

    refused = await post_with_cookie(client, "/refresh", token)

    assert refused.status_code == 403
    assert refused.json()["error"] == "csrf_failed"


async def test_logout_through_the_cookie_revokes_and_clears_it(
    browser: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """204; the session is revoked; Set-Cookie expires the cookie with the same attributes."""
    _, response = await cookie_login(browser)
    _, token, _ = set_cookie(response)

    out = await post_with_cookie(browser, "/logout", token)

    assert out.status_code == 204
    name, value, attributes = set_cookie(out)
    assert name == SECURE_NAME
    assert value in ("", '""')
    assert attributes["max-age"] == "0"
    assert attributes["path"] == "/"
    assert "secure" in attributes
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "logout"
    refused = await post_with_cookie(browser, "/refresh", token)
    assert refused.status_code == 403
    assert refused.json()["error"] == "invalid_token"


@pytest.mark.parametrize("token", ["garbage", "a.b.c"])
async def test_logout_with_a_garbage_cookie_is_204_and_clears_it(
    browser: httpx.AsyncClient, db: asyncpg.Connection, token: str
) -> None:
    """Logout is idempotent for any token: 204, cookie cleared, nothing revoked."""
    await cookie_login(browser)

    out = await post_with_cookie(browser, "/logout", token)
    again = await post_with_cookie(browser, "/logout", token)

    assert out.status_code == again.status_code == 204
    assert set_cookie(out)[2]["max-age"] == "0"
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL") == 0


async def test_logout_with_a_body_token_also_clears_the_cookie(browser: httpx.AsyncClient) -> None:
    """Whatever the transport, a logout leaves no refresh cookie behind."""
    out = await browser.post("/logout", json={"refresh_token": "garbage"})

    assert out.status_code == 204
    assert set_cookie(out)[2]["max-age"] == "0"


async def test_cors_preflight_is_answered_for_allowed_origins_only(
    browser: httpx.AsyncClient,
) -> None:
    """The allowed origin gets credentialed CORS; another origin gets no CORS headers."""
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-requested-with",
    }

    allowed = await browser.options("/refresh", headers={"Origin": APP, **preflight})
    foreign = await browser.options(
        "/refresh", headers={"Origin": "https://evil.example", **preflight}
    )
    simple = await browser.get("/healthz", headers={"Origin": "https://evil.example"})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "x-requested-with" in allowed.headers["access-control-allow-headers"].lower()
    assert foreign.status_code == 400
    assert "access-control-allow-origin" not in foreign.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_no_cors_headers_without_allowed_origins(client: httpx.AsyncClient) -> None:
    """CORS is off unless ALLOWED_ORIGINS names an origin."""
    response = await client.get("/healthz", headers={"Origin": APP})

    assert "access-control-allow-origin" not in response.headers
