"""Headless Chromium, one page calling two APIs on two origins, each registered as a resource
with an audience of its own: auth-client.js sends each API only its own token, and refreshes
them one at a time when both expire together. (Fixtures and servers: tests/e2e/test_browser.py.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import BrowserContext
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.verify import TokenVerifier, protect, token_claims
from tokenrota_server.config import Settings

from tests.admin_support import admin_client
from tests.audience_support import create_resource
from tests.e2e.test_browser import (  # noqa: F401 - fixtures used by name
    HOLD_MESSAGES,
    LiveServer,
    access_token_ttl,
    browser,
    free_listener,
    server,
    serving,
)
from tests.support import PASSWORD


def audience_of(authorization: str) -> str:
    """The `aud` of the bearer token in an Authorization header (read, not verified)."""
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return str(claims["aud"])


@pytest.fixture
async def apis(
    settings: Settings,
    server: LiveServer,  # noqa: F811
    db: asyncpg.Connection,
) -> AsyncIterator[dict[str, tuple[LiveServer, str]]]:
    """Two APIs built with tokenrota.verify on two origins, each its own resource (registered
    with the service): name -> (server, resource URI)."""
    started: dict[str, tuple[LiveServer, str]] = {}
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=server.origin))
        _, admin = await admin_client(http, db, settings)
        for name in ("orders", "billing"):
            listener, origin = free_listener()
            uri = f"{origin}/{name}"
            await create_resource(http, admin, uri, f"{name}:read")
            live = LiveServer(origin)
            await stack.enter_async_context(serving(api(settings, server, uri), listener, live))
            started[name] = (live, uri)
        yield started


def api(settings: Settings, service: LiveServer, resource: str) -> Starlette:
    """GET /whoami for a token of `resource`, CORS open to the service's pages."""

    async def whoami(request: Request) -> Response:
        claims = token_claims(request)
        return JSONResponse({"aud": claims.audience, "sub": claims.subject})

    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=resource,
        secret=str(settings.access_token_secret),
        leeway=0,
    )
    return Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[
            Middleware(
                CORSMiddleware, allow_origins=[service.origin], allow_headers=["authorization"]
            ),
            protect(verifier),
        ],
    )


@pytest.mark.parametrize("access_token_ttl", [60])
async def test_one_page_two_apis_two_audiences_refreshed_in_turn(
    browser: BrowserContext,  # noqa: F811
    server: LiveServer,  # noqa: F811
    apis: dict[str, tuple[LiveServer, str]],
    db: asyncpg.Connection,
) -> None:
    """Concurrent calls to both APIs: one /refresh per resource, each API receives only tokens
    of its own audience, the service's /profile the main token. When both tokens expire at
    the same instant, one refresh per resource again, never overlapping: the session lives."""
    (orders, orders_uri), (billing, billing_uri) = apis["orders"], apis["billing"]
    start = time.time()
    await browser.clock.set_fixed_time(start)
    page = browser.pages[0] if browser.pages else await browser.new_page()
    email = f"two-apis-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=server.origin) as http:
        registered = await http.post("/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
    await page.goto(f"{server.origin}/app")
    await page.evaluate(
        """async ([email, password, resources]) => {
            const { createAuthClient } = await import("/auth-client.js");
            window.app = createAuthClient({ resources });
            await window.app.login(email, password);
        }""",
        [email, PASSWORD, {orders.origin: orders_uri, billing.origin: billing_uri}],
    )
    burst = """async ([orders, billing]) => {
        const calls = [orders, billing, orders, billing, orders, billing, orders, billing]
            .map((origin) => window.app.fetch(`${origin}/whoami`));
        const answers = await Promise.all(calls);
        return Promise.all(answers.map(async (r) => [r.status, (await r.json()).aud]));
    }"""

    login_refreshes = server.count("/refresh")
    first = await page.evaluate(burst, [orders.origin, billing.origin])
    profile = await page.evaluate("async () => (await window.app.fetch('/profile')).status")
    after_first = server.count("/refresh")
    tokens = await db.fetchval("SELECT count(*) FROM refresh_tokens")

    await browser.clock.set_fixed_time(start + 120)  # both tokens past expiry at once
    second = await page.evaluate(burst, [orders.origin, billing.origin])

    expected = [[200, orders_uri], [200, billing_uri]] * 4
    assert first == second == expected
    assert profile == 200
    assert (login_refreshes, after_first - login_refreshes) == (0, 2)
    assert server.count("/refresh") - after_first == 2
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") - tokens == 2
    assert await db.fetchval("SELECT revoked_at FROM sessions") is None
    for api_server, uri in ((orders, orders_uri), (billing, billing_uri)):
        sent = [h["authorization"] for h in api_server.headers("/whoami") if "authorization" in h]
        assert sent
        assert {audience_of(value) for value in sent} == {uri}


@pytest.mark.parametrize("access_token_ttl", [60])
async def test_a_tab_given_the_lock_before_the_news_waits_for_the_resources_token(
    browser: BrowserContext,  # noqa: F811
    server: LiveServer,  # noqa: F811
    apis: dict[str, tuple[LiveServer, str]],
    db: asyncpg.Connection,
) -> None:
    """Two tabs hold orders' token; both expire. The first refreshes it, its announcement held
    back; the second, given the lock before the news, waits for that token and uses it: one
    refresh for the two tabs (the client without the stored number refreshed again)."""
    orders, orders_uri = apis["orders"]
    start = time.time()
    await browser.clock.set_fixed_time(start)
    first = browser.pages[0] if browser.pages else await browser.new_page()
    await first.add_init_script(HOLD_MESSAGES)
    email = f"two-tabs-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=server.origin) as http:
        registered = await http.post("/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
    make_client = """async ([email, password, resources]) => {
        const { createAuthClient } = await import("/auth-client.js");
        window.app = createAuthClient({ resources });
        if (email) await window.app.login(email, password);
    }"""
    await first.goto(f"{server.origin}/app")
    await first.evaluate(make_client, [email, PASSWORD, {orders.origin: orders_uri}])
    second = await browser.new_page()
    await second.goto(f"{server.origin}/app")
    await second.evaluate(make_client, [None, None, {orders.origin: orders_uri}])
    call = f"async () => (await window.app.fetch('{orders.origin}/whoami')).status"
    warm = [await first.evaluate(call), await second.evaluate(call)]
    await browser.clock.set_fixed_time(start + 120)
    tokens, posts = (
        await db.fetchval("SELECT count(*) FROM refresh_tokens"),
        server.count("/refresh"),
    )

    refreshed = await first.evaluate(
        f"async () => {{ window.held = []; return await ({call})(); }}"
    )
    await second.evaluate(
        f"""() => {{
            window.pending = ({call})();
            window.pending.finally(() => {{ window.settled = true; }});
        }}"""
    )
    await second.wait_for_function(
        "async () => window.settled || (await navigator.locks.query()).held.length > 0",
        polling=20,
    )
    await first.evaluate(
        "() => { const held = window.held; window.held = null; held.forEach((send) => send()); }"
    )
    status = await second.evaluate("window.pending")

    assert warm == [200, 200]
    assert (refreshed, status) == (200, 200)
    assert server.count("/refresh") == posts + 1
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == tokens + 1
    sent = [h["authorization"] for h in orders.headers("/whoami") if "authorization" in h]
    assert sent[-1] == sent[-2]  # the second tab sent the first tab's new token
