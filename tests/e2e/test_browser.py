"""End to end in headless Chromium: the demo page and auth-client.js against a real server
(uvicorn on a free port, in this test's event loop) and a real Postgres; resource servers built
with tokenrota.verify, and a third party, on other ports (so other origins).

Debian's /usr/bin/chromium is driven by Playwright; no browser is ever downloaded. `.ci/run`
installs the package when it is missing. Set DEMO_SCREENSHOT=docs/demo.png to refresh the
README's screenshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from playwright.async_api import BrowserContext, Page, async_playwright, expect
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from tokenrota.verify import TokenVerifier, protect, token_claims
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
BURST_ROUNDS = 20  # two-tab bursts: the old client rotated twice in most runs of three
# A frontend's own page on the service's origin, served by the test: the demo page's CSP
# (connect-src 'self') would stop its calls to other origins before the client could decide.
APP_PAGE = "<!doctype html><meta charset='utf-8'><title>an app</title>"
# A page's BroadcastChannel messages wait while `window.held` is an array, until the test
# sends them: another tab's news arrives late, as it may on a busy machine.
HOLD_MESSAGES = """
    const post = BroadcastChannel.prototype.postMessage;
    window.held = null;
    BroadcastChannel.prototype.postMessage = function (message) {
        if (window.held) window.held.push(() => post.call(this, message));
        else post.call(this, message);
    };
"""


@dataclass
class LiveServer:
    """A running app: its origin, and every HTTP request it received (method, path, headers)."""

    origin: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def count(self, path: str, method: str | None = None) -> int:
        return sum(1 for seen, at, _ in self.requests if at == path and method in (None, seen))

    def headers(self, path: str) -> list[dict[str, str]]:
        """The headers of every request to `path`, preflights included."""
        return [headers for _, at, headers in self.requests if at == path]


def free_listener() -> tuple[socket.socket, str]:
    """A socket bound to 127.0.0.1:<free port>, and its origin."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serving(app: Any, listener: socket.socket, live: LiveServer) -> AsyncIterator[None]:
    """`app` under uvicorn on `listener`, recording each request into `live`; stopped after."""

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {name.decode(): value.decode() for name, value in scope["headers"]}
            live.requests.append((scope["method"], scope["path"], headers))
        await app(scope, receive, send)

    config = uvicorn.Config(recording, lifespan="on", log_level="warning", access_log=False)
    uvicorn_server = uvicorn.Server(config)
    serving_task = asyncio.create_task(uvicorn_server.serve(sockets=[listener]))
    try:
        while not uvicorn_server.started:
            if serving_task.done():
                serving_task.result()  # raises what stopped it
            await asyncio.sleep(0.02)
        yield
    finally:
        uvicorn_server.should_exit = True
        await serving_task
        listener.close()


@pytest.fixture
def access_token_ttl() -> int:
    """The server's access token lifetime in seconds (a test may parametrize another)."""
    return ACCESS_TOKEN_TTL


@pytest.fixture
async def server(settings: Settings, access_token_ttl: int) -> AsyncIterator[LiveServer]:
    """The service on 127.0.0.1:<free port>, with short-lived access tokens and no leeway."""
    listener, origin = free_listener()
    live = LiveServer(origin)
    app = create_app(
        replace(
            settings, access_token_ttl=access_token_ttl, jwt_leeway=0, allowed_origins=(origin,)
        )
    )

    async def with_app_page(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/app":
            await HTMLResponse(APP_PAGE)(scope, receive, send)
        else:
            await app(scope, receive, send)

    async with serving(with_app_page, listener, live):
        yield live


@pytest.fixture
async def resource_server(settings: Settings, server: LiveServer) -> AsyncIterator[LiveServer]:
    """An API built with tokenrota.verify on another origin: GET /data for any valid token,
    CORS open to the service's pages (the demo's origin)."""

    async def data(request: Request) -> Response:
        return JSONResponse({"sub": token_claims(request).subject})

    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        leeway=0,
    )
    app = Starlette(
        routes=[Route("/data", data)],
        middleware=[
            Middleware(
                CORSMiddleware, allow_origins=[server.origin], allow_headers=["authorization"]
            ),
            protect(verifier),
        ],
    )
    listener, origin = free_listener()
    live = LiveServer(origin)
    async with serving(app, listener, live):
        yield live


@pytest.fixture
async def third_party() -> AsyncIterator[LiveServer]:
    """Someone else's API: it records what it gets, and its CORS lets any page send it any
    Authorization header (so only the client can be what keeps the token away)."""

    async def echo(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/echo", echo, methods=["GET", "POST"])],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_headers=["authorization", "x-app"],
                allow_methods=["GET", "POST"],
            )
        ],
    )
    listener, origin = free_listener()
    live = LiveServer(origin)
    async with serving(app, listener, live):
        yield live


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


async def concurrent_fetches(
    page: Page, client: str = "window.auth", count: int = 10, url: str = "/profile"
) -> Any:
    """The statuses of `count` simultaneous `client.fetch(url)` calls in `page`."""
    return await page.evaluate(
        f"""async ([count, url]) => {{
            const calls = Array.from({{length: count}}, () => {client}.fetch(url));
            return (await Promise.all(calls)).map((response) => response.status);
        }}""",
        [count, url],
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


async def test_the_remember_me_checkbox_sits_on_its_labels_line(
    browser: BrowserContext, server: LiveServer, tmp_path: Path
) -> None:
    """The checkbox is a box at the start of its label's first line, not a full-width input on
    a line of its own above the text."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(f"{server.origin}/demo")
    checkbox = page.locator("#remember")
    label = page.locator("label", has=checkbox)
    await expect(checkbox).to_be_visible()

    box, around = await checkbox.bounding_box(), await label.bounding_box()
    line = await label.evaluate("(node) => parseFloat(getComputedStyle(node).lineHeight)")
    await label.screenshot(path=tmp_path / "remember.png")

    assert box is not None
    assert around is not None
    assert box["width"] < 2 * box["height"], box  # a box, not a stretched input
    assert box["x"] - around["x"] < 8, (box, around)
    # Its middle lies within the first line of the label's text.
    assert 0 < box["y"] + box["height"] / 2 - around["y"] < line, (box, around, line)
    assert around["height"] < 3 * line, around  # text beside it, not pushed below


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


# Page clocks are stopped and moved by the test, so the server's tokens live a minute: none
# expires at the server while a round runs, however slow the machine.
@pytest.mark.parametrize("access_token_ttl", [60])
async def test_two_tabs_whose_tokens_expire_together_rotate_once(
    browser: BrowserContext, server: LiveServer, db: asyncpg.Connection
) -> None:
    """Both tabs' tokens expire at the same moment and each tab fires 5 auth.fetch calls at
    once, 20 times over: every round makes exactly one /refresh and one new refresh token,
    whichever tab takes the lock second. The store behind it holds a number, never a token."""
    start = time.time()
    # Date stands still in both pages (timers still run) until the next round moves it on.
    await browser.clock.set_fixed_time(start)
    first = browser.pages[0] if browser.pages else await browser.new_page()
    email = await sign_in(first, server)
    second = await browser.new_page()
    await second.goto(f"{server.origin}/demo")
    await expect(second.locator("#who")).to_have_text(email)

    rotations: list[int] = []
    refreshes: list[int] = []
    statuses: list[list[int]] = []
    for round_number in range(1, BURST_ROUNDS + 1):
        # Past both tabs' shared token's expiry, at the same instant in both.
        await browser.clock.set_fixed_time(start + 120 * round_number)
        tokens, posts = (
            await db.fetchval("SELECT count(*) FROM refresh_tokens"),
            server.count("/refresh"),
        )
        statuses += await asyncio.gather(
            concurrent_fetches(first, count=5), concurrent_fetches(second, count=5)
        )
        rotations.append(await db.fetchval("SELECT count(*) FROM refresh_tokens") - tokens)
        refreshes.append(server.count("/refresh") - posts)

    assert statuses == [[200] * 5] * 2 * BURST_ROUNDS
    assert rotations == [1] * BURST_ROUNDS
    assert refreshes == [1] * BURST_ROUNDS
    assert await db.fetchval("SELECT revoked_at FROM sessions") is None
    stored = await first.evaluate(
        """async () => {
            const names = (await indexedDB.databases()).map((database) => database.name);
            const database = await new Promise((resolve, reject) => {
                const request = indexedDB.open("token-service-auth");
                request.onsuccess = () => resolve(request.result);
                request.onerror = () => reject(request.error);
            });
            const state = database.transaction("state").objectStore("state");
            const entries = await new Promise((resolve) => {
                const request = state.getAll();
                request.onsuccess = () => resolve(request.result);
            });
            database.close();
            return { names, entries, storage: localStorage.length + sessionStorage.length };
        }"""
    )
    assert stored == {
        "names": ["token-service-auth"],
        "entries": [BURST_ROUNDS + 2],  # the login, the second tab's load, one per round
        "storage": 0,
    }


@pytest.mark.parametrize("access_token_ttl", [60])
async def test_a_tab_given_the_lock_before_the_news_waits_for_the_new_token(
    browser: BrowserContext, server: LiveServer, db: asyncpg.Connection
) -> None:
    """The first tab refreshes and its announcement is held back; the second tab, its token
    expired too, takes the lock before the news: it waits for the first tab's token and uses
    it, so one rotation (the old client refreshed again)."""
    start = time.time()
    await browser.clock.set_fixed_time(start)
    first = browser.pages[0] if browser.pages else await browser.new_page()
    await first.add_init_script(HOLD_MESSAGES)
    email = await sign_in(first, server)
    second = await browser.new_page()
    await second.goto(f"{server.origin}/demo")
    await expect(second.locator("#who")).to_have_text(email)
    await browser.clock.set_fixed_time(start + 120)
    tokens, posts = (
        await db.fetchval("SELECT count(*) FROM refresh_tokens"),
        server.count("/refresh"),
    )

    refreshed = await first.evaluate(
        'async () => { window.held = []; return (await window.auth.fetch("/profile")).status; }'
    )
    await second.evaluate(
        """() => {
            window.pending = window.auth.fetch("/profile").then((response) => response.status);
            window.pending.finally(() => { window.settled = true; });
        }"""
    )
    # The second tab holds the lock (waiting for the news), or is done (without waiting).
    await second.wait_for_function(
        "async () => window.settled || (await navigator.locks.query()).held.length > 0",
        polling=20,
    )
    await first.evaluate(
        "() => { const held = window.held; window.held = null; held.forEach((send) => send()); }"
    )
    status = await second.evaluate("window.pending")

    assert (refreshed, status) == (200, 200)
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == tokens + 1
    assert server.count("/refresh") == posts + 1


async def test_an_expired_token_at_a_resource_server_is_refreshed_once_and_retried(
    browser: BrowserContext, server: LiveServer, resource_server: LiveServer
) -> None:
    """An API on another origin built with tokenrota.verify answers the expired token 403
    token_expired, as the service does: 5 concurrent calls share one /refresh, each retried once."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    email = await sign_in(page, server)
    await page.goto(f"{server.origin}/app")
    await page.evaluate(
        """async ([email, password, api]) => {
            const { createAuthClient } = await import("/auth-client.js");
            window.late = createAuthClient({ refreshMargin: -3600, resourceOrigins: [api] });
            await window.late.login(email, password);
        }""",
        [email, PASSWORD, resource_server.origin],
    )
    await asyncio.sleep(ACCESS_TOKEN_TTL + 1)
    refreshes = server.count("/refresh")

    statuses = await concurrent_fetches(
        page, client="window.late", count=5, url=f"{resource_server.origin}/data"
    )

    assert statuses == [200] * 5
    assert server.count("/refresh") == refreshes + 1
    assert resource_server.count("/data", "GET") == 10


# Not about expiry: a token that came close to it on a slow machine was refreshed first.
@pytest.mark.parametrize("access_token_ttl", [60])
async def test_a_session_revoked_elsewhere_ends_in_every_tab(
    browser: BrowserContext, server: LiveServer
) -> None:
    """Another device revokes the browser's session (DELETE /sessions/{id}); the next
    auth.fetch gets 403 invalid_token and signs out both tabs with reason "revoked", without
    a /refresh attempt."""
    first = browser.pages[0] if browser.pages else await browser.new_page()
    email = await sign_in(first, server)
    second = await browser.new_page()
    await second.goto(f"{server.origin}/demo")
    await expect(second.locator("#who")).to_have_text(email)
    async with httpx.AsyncClient(base_url=server.origin) as phone:
        pair = (await phone.post("/login", json={"email": email, "password": PASSWORD})).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        sessions = (await phone.get("/sessions", headers=bearer)).json()["sessions"]
        (browser_session,) = [session for session in sessions if not session["current"]]
        revoked = await phone.delete(f"/sessions/{browser_session['id']}", headers=bearer)
    refreshes = server.count("/refresh")

    status = await first.evaluate('async () => (await window.auth.fetch("/profile")).status')

    assert revoked.status_code == 204
    assert status == 403
    for page in (first, second):
        await expect(page.locator("#signed-out")).to_be_visible()
        await expect(page.locator("#log")).to_contain_text("signed out (revoked)")
    assert server.count("/refresh") == refreshes


async def test_the_token_goes_only_to_the_service_and_the_listed_origins(
    browser: BrowserContext,
    server: LiveServer,
    resource_server: LiveServer,
    third_party: LiveServer,
) -> None:
    """auth.fetch attaches the token for the service and resourceOrigins; a third-party URL
    (absolute, protocol-relative, a Request, a URL object) gets no Authorization header, even
    though its CORS would accept one."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await sign_in(page, server)
    await page.goto(f"{server.origin}/app")

    statuses = await page.evaluate(
        """async ([api, other]) => {
            const { createAuthClient } = await import("/auth-client.js");
            const auth = createAuthClient({ resourceOrigins: [api] });
            const otherHost = other.replace("http:", "");
            const calls = [
                auth.fetch(`${api}/data`),
                auth.fetch("/profile"),
                auth.fetch(`${other}/echo`),
                auth.fetch(`${otherHost}/echo`, { headers: { "X-App": "1" } }),
                auth.fetch(new Request(`${other}/echo`, { method: "POST", body: "x" })),
                auth.fetch(new URL(`${other}/echo`)),
            ];
            return (await Promise.all(calls)).map((response) => response.status);
        }""",
        [resource_server.origin, third_party.origin],
    )

    assert statuses == [200] * 6
    assert third_party.count("/echo", "GET") + third_party.count("/echo", "POST") == 4
    seen = third_party.headers("/echo")
    assert [headers for headers in seen if "authorization" in headers] == []
    assert all(
        "authorization" not in headers.get("access-control-request-headers", "") for headers in seen
    )
    assert resource_server.headers("/data")[-1]["authorization"].startswith("Bearer ")


async def test_resource_origins_must_be_origins(
    browser: BrowserContext, server: LiveServer
) -> None:
    """A path, a wildcard or a bare host name in resourceOrigins is a TypeError at once."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(f"{server.origin}/app")

    errors = await page.evaluate(
        """async () => {
            const { createAuthClient } = await import("/auth-client.js");
            const entries = ["https://api.example/v1", "*", "api.example", "ftp://api.example"];
            return entries.map((entry) => {
                try {
                    createAuthClient({ resourceOrigins: [entry] });
                    return "accepted";
                } catch (error) {
                    return error.name;
                }
            });
        }"""
    )

    assert errors == ["TypeError"] * 4


@pytest.fixture
async def mailing_server(settings: Settings, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """The service whose development mailbox is this test's own and whose links lead to it."""
    listener, origin = free_listener()
    live = LiveServer(origin)
    app = create_app(
        replace(
            settings,
            allowed_origins=(origin,),
            public_url=origin,
            data_dir=tmp_path / "data",
            mail_poll_interval=1,
        )
    )
    async with serving(app, listener, live):
        yield live


async def test_demo_forgot_password_mailbox_link_and_reset(
    browser: BrowserContext, mailing_server: LiveServer
) -> None:
    """Forgot password on the demo page, the message in its development mailbox, its link back
    to the demo's reset form, the new password set; then it logs in."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    email = await sign_in(page, mailing_server)
    await page.click("#logout")
    await expect(page.locator("#signed-out")).to_be_visible()

    await page.fill("#email", email)
    await page.click("#forgot")
    await expect(page.locator("#log")).to_contain_text("POST /password/forgot -> 202")
    await expect(page.locator("#mail-subject")).to_have_text("Reset your password")
    await page.click("#mail-link")
    await expect(page.locator("#reset")).to_be_visible()
    await page.fill("#new-password", "a brand new passphrase")
    await page.click("#reset-submit")
    await expect(page.locator("#log")).to_contain_text("POST /password/reset -> 204")
    assert "token" not in page.url

    await page.fill("#email", email)
    await page.fill("#password", "a brand new passphrase")
    await page.click("#login")
    await expect(page.locator("#who")).to_have_text(f"{email} (verified)")
