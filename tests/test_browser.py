"""End to end in headless Chromium: the demo page and auth-client.js against a real server
(uvicorn on a free port, in this test's event loop) and a real Postgres.

Debian's /usr/bin/chromium is driven by Playwright; no browser is ever downloaded. `.ci/run`
installs the package when it is missing. Set DEMO_SCREENSHOT=docs/demo.png to refresh the
README's screenshot.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from playwright.async_api import BrowserContext, Page, async_playwright, expect
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

from tests.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ACCESS_TOKEN_TTL = 2  # seconds: short enough to let a token expire within a test


@dataclass
class LiveServer:
    """A running service: its origin, and the path of every HTTP request it received."""

    origin: str
    paths: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return self.paths.count(path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    """The service on 127.0.0.1:<free port>, with short-lived access tokens and no leeway."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{listener.getsockname()[1]}"
    live = LiveServer(origin)
    app = create_app(
        replace(
            settings, access_token_ttl=ACCESS_TOKEN_TTL, jwt_leeway=0, allowed_origins=(origin,)
        )
    )

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            live.paths.append(scope["path"])
        await app(scope, receive, send)

    config = uvicorn.Config(counting, lifespan="on", log_level="warning", access_log=False)
    uvicorn_server = uvicorn.Server(config)
    serving = asyncio.create_task(uvicorn_server.serve(sockets=[listener]))
    while not uvicorn_server.started:
        if serving.done():
            serving.result()  # raises what stopped it
        await asyncio.sleep(0.02)
    try:
        yield live
    finally:
        uvicorn_server.should_exit = True
        await serving
        listener.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with a fresh profile directory."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - one stat, before the loop has work
        pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run does this)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": 720},
        )
        try:
            yield context
        finally:
            await context.close()


async def sign_in(page: Page, server: LiveServer) -> str:
    """Register and log in through the demo page's form; return the email."""
    email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
    await page.goto(f"{server.origin}/demo")
    await expect(page.locator("#signed-out")).to_be_visible()
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("#register")
    await expect(page.locator("#log")).to_contain_text("POST /register -> 201")
    await page.click("#login")
    await expect(page.locator("#who")).to_have_text(email)
    return email


async def concurrent_fetches(page: Page, client: str = "window.auth", count: int = 10) -> Any:
    return await page.evaluate(
        f"""async () => {{
            const calls = Array.from({{length: {count}}}, () => {client}.fetch("/profile"));
            return (await Promise.all(calls)).map((response) => response.status);
        }}"""
    )


async def test_demo_login_silent_refresh_reload_and_logout(
    browser: BrowserContext, server: LiveServer, db: asyncpg.Connection
) -> None:
    """Log in on the demo page; after expiry, 10 concurrent fetches cause exactly one /refresh;
    a reload stays signed in through the cookie; logout clears it."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    email = await sign_in(page, server)
    await expect(page.locator("#sessions tr")).to_have_count(1)
    screenshot = os.environ.get("DEMO_SCREENSHOT")
    if screenshot:
        await page.screenshot(path=screenshot, full_page=True)

    cookies = {cookie["name"]: cookie for cookie in await browser.cookies()}
    assert set(cookies) == {"__Host-refresh_token"}
    cookie = cookies["__Host-refresh_token"]
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0

    await asyncio.sleep(ACCESS_TOKEN_TTL + 1)
    refreshes = server.count("/refresh")
    statuses = await concurrent_fetches(page)

    assert statuses == [200] * 10
    assert server.count("/refresh") == refreshes + 1

    await page.reload()
    await expect(page.locator("#who")).to_have_text(email)
    assert server.count("/refresh") == refreshes + 2

    await page.click("#logout")
    await expect(page.locator("#signed-out")).to_be_visible()
    assert await browser.cookies() == []
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "logout"
    await page.reload()
    await expect(page.locator("#signed-out")).to_be_visible()


async def test_a_403_token_expired_is_refreshed_once_and_retried(
    browser: BrowserContext, server: LiveServer
) -> None:
    """A client that sends an expired token (its refresh margin set past expiry): every call
    gets 403 token_expired, all share one /refresh, and each is retried once with success."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await sign_in(page, server)
    await page.evaluate(
        """async ([email, password]) => {
            const { createAuthClient } = await import("/auth-client.js");
            window.late = createAuthClient({ refreshMargin: -3600 });
            await window.late.login(email, password);
        }""",
        [await page.locator("#who").text_content(), PASSWORD],
    )
    await asyncio.sleep(ACCESS_TOKEN_TTL + 1)
    before = (server.count("/refresh"), server.count("/profile"))

    statuses = await concurrent_fetches(page, client="window.late")

    assert statuses == [200] * 10
    assert server.count("/refresh") == before[0] + 1
    assert server.count("/profile") == before[1] + 20


async def test_tabs_coordinate_refreshes_and_logout(
    browser: BrowserContext, server: LiveServer, db: asyncpg.Connection
) -> None:
    """Two tabs with expired tokens refresh one after the other (never into the grace window),
    and a logout in one tab signs the other out at once."""
    first = browser.pages[0] if browser.pages else await browser.new_page()
    email = await sign_in(first, server)
    refused = server.count("/refresh")  # the first load's try, before there was a cookie
    second = await browser.new_page()
    await second.goto(f"{server.origin}/demo")
    await expect(second.locator("#who")).to_have_text(email)
    await asyncio.sleep(ACCESS_TOKEN_TTL + 1)

    results = await asyncio.gather(
        concurrent_fetches(first, count=5), concurrent_fetches(second, count=5)
    )

    assert results == [[200] * 5, [200] * 5]
    # Each /refresh rotated the then-current cookie: one new row per request, so none was
    # answered from the grace window, and the session is intact.
    rotations = server.count("/refresh") - refused
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 1 + rotations
    assert rotations <= 3  # the second tab's load, then at most one per tab
    assert await db.fetchval("SELECT revoked_at FROM sessions") is None

    await first.click("#logout")

    await expect(second.locator("#signed-out")).to_be_visible()
    await expect(second.locator("#log")).to_contain_text("signed out (other-tab)")
