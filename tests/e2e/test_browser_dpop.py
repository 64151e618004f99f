"""auth-client.js with `dpop: true` in headless Chromium: the session bound to a key WebCrypto will
not export, kept in IndexedDB across a reload, shared by tabs, accepted by a resource server built
with tokenrota.verify (after a second factor too), switched on in the demo page; and what a thief
copies out of the page (the access token, a proof, the refresh cookie) refused everywhere else.

One Chromium for the module, a fresh context (cookies, IndexedDB) per test; the servers run in
the module's event loop, as Playwright does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    async_playwright,
    expect,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from tokenrota.dpop import Nonces
from tokenrota.verify import TokenVerifier, protect, token_claims
from tokenrota_server import totp
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

from tests.conftest import PASSWORD
from tests.dpop_support import Signer, proof_claims, proof_key
from tests.e2e.test_browser import (
    APP_PAGE,
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveServer,
    free_listener,
    serving,
    sign_in,
)
from tests.oauth_support import claims_of

# One worker runs the module, so its one Chromium is launched once.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.xdist_group("browser_dpop")]
# Server tokens live 20 s. Page clocks stand still where the test puts them, up to a minute behind
# real time (proof iat must be at most 60 s old); a tab deems its token stale 10 s after issue
# (half the lifetime), so moving the page clock 11 s on makes both tabs refresh, while the server
# still finds every token and proof good.
ACCESS_TOKEN_TTL = 20
STALE_STEP = 11
ROUNDS = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module", name="chromium")
async def chromium_fixture() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run does this)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module", name="context")
async def context_fixture(chromium: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile: its own cookies and IndexedDB."""
    context = await chromium.new_context()
    yield context
    await context.close()


def service_app(settings: Settings, origin: str, **changes: Any) -> Any:
    """The service for `origin` (its public URL: proofs name it), with the page /app."""
    app = create_app(
        replace(
            settings,
            access_token_ttl=ACCESS_TOKEN_TTL,
            jwt_leeway=0,
            allowed_origins=(origin,),
            public_url=origin,
            **changes,
        )
    )

    async def with_app_page(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/app":
            await HTMLResponse(APP_PAGE)(scope, receive, send)
        else:
            await app(scope, receive, send)

    return with_app_page


@pytest_asyncio.fixture(loop_scope="module", name="service")
async def service_fixture(settings: Settings) -> AsyncIterator[LiveServer]:
    """The service on a free port."""
    listener, origin = free_listener()
    live = LiveServer(origin)
    async with serving(service_app(settings, origin), listener, live):
        yield live


def api_app(
    settings: Settings,
    page_origin: str,
    *before_protect: Middleware,
    nonces: Nonces | None = None,
) -> Starlette:
    """An API built with tokenrota.verify (wanting its own `nonces`, if given), its CORS open to
    `page_origin` for the Authorization and DPoP headers (and its answers' DPoP-Nonce and
    WWW-Authenticate)."""

    async def data(request: StarletteRequest) -> Response:
        return JSONResponse({"sub": token_claims(request).subject})

    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        leeway=0,
        dpop_nonces=nonces,
    )
    cors = Middleware(
        CORSMiddleware,
        allow_origins=[page_origin],
        allow_headers=["authorization", "dpop"],
        expose_headers=["dpop-nonce", "www-authenticate"],
    )
    middleware = [cors, *before_protect, protect(verifier)]
    return Starlette(routes=[Route("/data", data)], middleware=middleware)


@pytest_asyncio.fixture(loop_scope="module", name="api")
async def api_fixture(settings: Settings, service: LiveServer) -> AsyncIterator[LiveServer]:
    """An API on another origin, for pages of the service's origin."""
    listener, origin = free_listener()
    live = LiveServer(origin)
    async with serving(api_app(settings, service.origin), listener, live):
        yield live


@pytest_asyncio.fixture(loop_scope="module", name="connection")
async def connection_fixture(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, in the module's loop."""
    connection = await asyncpg.connect(settings.database_url)
    yield connection
    await connection.close()


async def new_account(service: LiveServer) -> str:
    """A registered email (password PASSWORD)."""
    email = f"dpop-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=service.origin) as http:
        created = await http.post("/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201
    return email


async def open_app(context: BrowserContext, service: LiveServer, api: str | None = None) -> Page:
    """A page of the app with `window.auth`, a DPoP client (API origin `api`, if any)."""
    page = await context.new_page()
    await page.goto(f"{service.origin}/app")
    await page.evaluate(
        """async (api) => {
            const { createAuthClient } = await import("/auth-client.js");
            window.auth = createAuthClient({ dpop: true, resourceOrigins: api ? [api] : [] });
        }""",
        api,
    )
    return page


async def log_in(page: Page, email: str) -> None:
    await page.evaluate(
        "([email, password]) => window.auth.login(email, password)", [email, PASSWORD]
    )


async def statuses(page: Page, url: str, count: int = 1) -> list[int]:
    """The statuses of `count` simultaneous `auth.fetch(url)` calls in `page`."""
    result: list[int] = await page.evaluate(
        """async ([url, count]) => {
            const calls = Array.from({ length: count }, () => window.auth.fetch(url));
            return (await Promise.all(calls)).map((response) => response.status);
        }""",
        [url, count],
    )
    return result


STORED_KEY = """async () => {
    const database = await new Promise((resolve, reject) => {
        const request = indexedDB.open("token-service-dpop");
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
    });
    const keys = database.transaction("state").objectStore("state");
    const entries = await new Promise((resolve) => {
        const request = keys.getAll();
        request.onsuccess = () => resolve(request.result);
    });
    database.close();
    return entries.map(({ privateKey, publicKey, ...rest }) => ({
        private: [privateKey.type, privateKey.extractable, privateKey.algorithm.namedCurve],
        public: [publicKey.type, publicKey.extractable],
        other: Object.keys(rest),
    }));
}"""


async def test_a_dpop_login_binds_the_session_to_an_unexportable_key_that_survives_a_reload(
    context: BrowserContext, service: LiveServer, connection: asyncpg.Connection
) -> None:
    """Login and calls carry proofs by one P-256 key; the access token names it (cnf.jkt); the key
    pair sits in IndexedDB with its private half unexportable, and nothing else is stored; after
    a reload the cookie refresh is signed by the same key and the session goes on; logout
    deletes the key."""
    email = await new_account(service)
    page = await open_app(context, service)

    await log_in(page, email)
    first = await statuses(page, "/profile")
    stored = await page.evaluate(STORED_KEY)
    storage = await page.evaluate("localStorage.length + sessionStorage.length")
    await page.reload()
    await page.evaluate(
        """async () => {
            const { createAuthClient } = await import("/auth-client.js");
            window.auth = createAuthClient({ dpop: true });
        }"""
    )
    after_reload = await statuses(page, "/profile")
    revoked_before_logout = await connection.fetchval("SELECT revoked_at FROM sessions")
    await page.evaluate("() => window.auth.logout()")
    after_logout = await page.evaluate(STORED_KEY)

    (login,) = service.headers("/login")
    jkt = proof_key(login["dpop"])
    assert first == after_reload == [200]
    assert stored == [
        {"private": ["private", False, "P-256"], "public": ["public", True], "other": []}
    ]
    assert storage == 0
    for headers in service.headers("/profile"):
        scheme, token = headers["authorization"].split(" ", 1)
        assert scheme == "DPoP"
        assert claims_of(token)["cnf"] == {"jkt": jkt}
        assert proof_key(headers["dpop"]) == jkt
    assert [proof_key(headers["dpop"]) for headers in service.headers("/refresh")] == [jkt]
    assert await connection.fetchval("SELECT count(*) FROM refresh_tokens") == 2
    assert revoked_before_logout is None
    assert after_logout == []  # logout deletes the key


async def test_the_demo_dpop_switch_binds_the_session_to_the_browsers_key(
    context: BrowserContext, service: LiveServer
) -> None:
    """Ticking the demo's DPoP switch reloads it with a DPoP client and stays ticked: the login
    carries a proof, every call goes as Authorization: DPoP with a proof by that key, the page
    says so, and after a reload the cookie refresh is signed by the same key."""
    page = await context.new_page()
    await page.goto(f"{service.origin}/demo")
    async with page.expect_navigation():
        await page.click("#dpop")
    await expect(page.locator("#dpop")).to_be_checked()

    email = await sign_in(page, service)
    await expect(page.locator("#binding")).to_contain_text("DPoP")
    await page.reload()
    await expect(page.locator("#who")).to_have_text(email)

    (login,) = service.headers("/login")
    key = proof_key(login["dpop"])
    calls = service.headers("/profile") + service.headers("/sessions")
    refreshes = [headers for headers in service.headers("/refresh") if "dpop" in headers]
    assert len(calls) >= 4  # /profile and /sessions, before and after the reload
    assert {headers["authorization"].split(" ")[0] for headers in calls} == {"DPoP"}
    assert {proof_key(headers["dpop"]) for headers in calls + refreshes} == {key}
    assert len(refreshes) >= 1


async def test_two_tabs_share_the_key_and_make_one_rotation_per_expiry(
    context: BrowserContext, service: LiveServer, connection: asyncpg.Connection
) -> None:
    """A tab opened first gets the other tab's login (token and key) over its channel and uses it
    without a refresh; then, three times over, both tabs' tokens go stale together and each fires 5
    calls at once: exactly one /refresh, one new refresh token, every call 200."""
    email = await new_account(service)
    await context.clock.set_fixed_time(time.time() - 45)
    watcher = await open_app(context, service)
    # A listener made after the client's channel hears each message after the client has.
    await watcher.evaluate(
        """() => {
            const channel = new BroadcastChannel("token-service-auth");
            window.heard = new Promise((resolve) => {
                channel.onmessage = ({ data }) => {
                    const key = data.key?.privateKey;
                    if (data.type === "token") resolve([key?.type, key?.extractable]);
                };
            });
        }"""
    )
    first = await open_app(context, service)
    moment = time.time() - 45  # set again just before the login, however slow the set-up was
    await context.clock.set_fixed_time(moment)
    await log_in(first, email)
    heard = await watcher.evaluate("window.heard")
    handed_over = await statuses(watcher, "/profile")
    before_rounds = service.count("/refresh")

    rotations, refreshes, answers = [], [], []
    for _ in range(ROUNDS):
        # Stale in both tabs, and never too old a proof for the server, however slow the machine.
        moment = max(moment + STALE_STEP, time.time() - 45)
        await context.clock.set_fixed_time(moment)
        tokens, posts = (
            await connection.fetchval("SELECT count(*) FROM refresh_tokens"),
            service.count("/refresh"),
        )
        answers += await asyncio.gather(
            statuses(first, "/profile", 5), statuses(watcher, "/profile", 5)
        )
        rotations.append(await connection.fetchval("SELECT count(*) FROM refresh_tokens") - tokens)
        refreshes.append(service.count("/refresh") - posts)

    assert heard == ["private", False]
    assert handed_over == [200]
    assert before_rounds == 0
    assert answers == [[200] * 5] * 2 * ROUNDS
    assert rotations == [1] * ROUNDS
    assert refreshes == [1] * ROUNDS
    assert await connection.fetchval("SELECT revoked_at FROM sessions") is None
    keys = {proof_key(headers["dpop"]) for headers in service.headers("/refresh")}
    assert keys == {proof_key(service.headers("/login")[0]["dpop"])}


async def test_what_a_thief_copies_out_of_the_page_is_refused_elsewhere(
    context: BrowserContext,
    service: LiveServer,
    api: LiveServer,
    connection: asyncpg.Connection,
) -> None:
    """The page calls an API built with tokenrota.verify with its DPoP-bound token. Its token, its
    proof and its refresh cookie, copied into httpx: the token as a bearer is 403 at the API and
    at the service, with the copied proof again (a replay) or for another URL 401; the cookie
    alone is refused and audited; with a proof by the thief's own key it ends the session."""
    email = await new_account(service)
    page = await open_app(context, service, api.origin)
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    await log_in(page, email)

    called = await statuses(page, f"{api.origin}/data")
    (sent,) = [request for request in seen if request.url == f"{api.origin}/data"]
    headers = await sent.all_headers()
    token = headers["authorization"].removeprefix("DPoP ")
    (cookie,) = [cookie["value"] for cookie in await context.cookies()]
    thief = Signer("ES256")
    cookie_headers = {
        "Origin": service.origin,
        "X-Requested-With": "thief",
        "Cookie": f"__Host-refresh_token={cookie}",
    }
    async with httpx.AsyncClient() as http:
        as_bearer = await http.get(
            f"{api.origin}/data", headers={"Authorization": f"Bearer {token}"}
        )
        replayed = await http.get(
            f"{api.origin}/data",
            headers={"Authorization": f"DPoP {token}", "DPoP": headers["dpop"]},
        )
        at_service = await http.get(
            f"{service.origin}/profile",
            headers={"Authorization": f"DPoP {token}", "DPoP": headers["dpop"]},
        )
        service_bearer = await http.get(
            f"{service.origin}/profile", headers={"Authorization": f"Bearer {token}"}
        )
        cookie_alone = await http.post(f"{service.origin}/refresh", headers=cookie_headers)
        still_working = await statuses(page, f"{api.origin}/data")
        own_key = thief.proof(htu=f"{service.origin}/refresh", iat=int(time.time()))
        with_own_key = await http.post(
            f"{service.origin}/refresh", headers={**cookie_headers, "DPoP": own_key}
        )
    actions = [row["action"] for row in await connection.fetch("SELECT action FROM audit_events")]

    assert called == still_working == [200]
    assert headers["dpop"]
    assert (as_bearer.status_code, as_bearer.json()["error"]) == (403, "invalid_token")
    assert replayed.status_code == 401
    assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]
    assert at_service.status_code == 401
    assert (service_bearer.status_code, service_bearer.json()["error"]) == (403, "invalid_token")
    assert (cookie_alone.status_code, cookie_alone.json()["error"]) == (403, "invalid_token")
    assert with_own_key.status_code == 403
    assert "dpop_proof_missing" in actions
    assert "dpop_key_mismatch" in actions
    assert await connection.fetchval("SELECT revoked_at FROM sessions") is not None


async def totp_account(service: LiveServer) -> tuple[str, str]:
    """A registered email (password PASSWORD) with a live TOTP factor, and its secret. The
    enrolment spends this time step's code; the next step's is accepted (one step of drift)."""
    email = await new_account(service)
    async with httpx.AsyncClient(base_url=service.origin) as http:
        pair = (await http.post("/login", json={"email": email, "password": PASSWORD})).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        started = (await http.post("/mfa/totp", json={}, headers=bearer)).json()
        code = totp.code_at(started["secret"], totp.step_of(datetime.now(UTC)))
        verified = await http.post(
            f"/mfa/totp/{started['factor_id']}/verify", json={"code": code}, headers=bearer
        )
    assert verified.status_code == 200, verified.text
    return email, started["secret"]


async def test_a_dpop_login_with_a_second_factor_calls_another_origin_with_a_bound_aal2_token(
    context: BrowserContext, service: LiveServer, api: LiveServer
) -> None:
    """DPoP, TOTP and a resource in one flow: the DPoP login answers mfa_required, completeMfa
    with the code binds the session to the key that signed /login/mfa, and the API on another
    origin takes the aal2 token as Authorization: DPoP with a proof by that key."""
    email, secret = await totp_account(service)
    page = await open_app(context, service, api.origin)

    asked = await page.evaluate(
        """async ([email, password]) => {
            try {
                await window.auth.login(email, password);
                return "no second factor asked";
            } catch (error) {
                window.mfaToken = error.mfaToken;
                return [error.code, error.factors.map((factor) => factor.type)];
            }
        }""",
        [email, PASSWORD],
    )
    code = totp.code_at(secret, totp.step_of(datetime.now(UTC)) + 1)
    await page.evaluate("(code) => window.auth.completeMfa(window.mfaToken, { code })", code)
    called = await statuses(page, f"{api.origin}/data")

    (finished,) = service.headers("/login/mfa")
    key = proof_key(finished["dpop"])
    (call,) = [headers for headers in api.headers("/data") if "dpop" in headers]
    scheme, token = call["authorization"].split(" ", 1)
    claims = claims_of(token)
    assert asked == ["mfa_required", ["totp"]]
    assert proof_key(service.headers("/login")[-1]["dpop"]) != key  # a new key per sign-in
    assert called == [200]
    assert (scheme, proof_key(call["dpop"])) == ("DPoP", key)
    assert (claims["cnf"], claims["acr"]) == ({"jkt": key}, "aal2")


class NonceGate:
    """ASGI middleware that wants `nonce` in every DPoP proof to the paths in `paths`, answering
    as RFC 9449 §8 and §9 say: 400 use_dpop_nonce at a token endpoint (`token_endpoint`),
    else 401 with a DPoP challenge; always with the DPoP-Nonce header. With `next_nonce`, that
    one is accepted too and handed out with successes (a rotation announced ahead)."""

    # The one instance of each gate, for the test to read and turn (Starlette builds it).
    made: dict[str, NonceGate] = {}  # noqa: RUF012 - a registry of the test's own

    def __init__(
        self, app: Any, paths: set[str], token_endpoint: bool = False, name: str = ""
    ) -> None:
        self.app, self.paths, self.token_endpoint = app, paths, token_endpoint
        self.nonce = "first-nonce"
        self.next_nonce: str | None = None
        self.asked = 0
        self.rotate_on_refusal = False  # a nonce that is always stale: the client must give up
        NonceGate.made[name] = self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        proof = dict(scope["headers"]).get(b"dpop", b"").decode()
        accepted = {self.nonce, self.next_nonce} - {None}
        if proof and proof_claims(proof).get("nonce") not in accepted:
            self.asked += 1
            refusal = self.refusal()
            if self.rotate_on_refusal:  # stale as soon as it is given
                self.nonce = f"nonce-{self.asked}"
            await refusal(scope, receive, send)
            return

        async def with_nonce(message: Any) -> None:
            if message["type"] == "http.response.start":
                nonce = self.next_nonce or self.nonce
                message["headers"] = [*message["headers"], (b"dpop-nonce", nonce.encode())]
            await send(message)

        await self.app(scope, receive, with_nonce)

    def refusal(self) -> Response:
        headers = {"DPoP-Nonce": self.nonce}
        if self.token_endpoint:
            body = {"error": "use_dpop_nonce", "error_description": "Use the nonce."}
            return JSONResponse(body, status_code=400, headers=headers)
        headers["WWW-Authenticate"] = 'DPoP error="use_dpop_nonce"'
        body = {"error": "use_dpop_nonce", "error_description": "Use the nonce."}
        return JSONResponse(body, status_code=401, headers=headers)


async def test_the_client_retries_once_with_the_nonce_a_server_asks_for(
    context: BrowserContext, settings: Settings, connection: asyncpg.Connection
) -> None:
    """A service that wants nonces at /login and /refresh (400 use_dpop_nonce) and an API built
    with tokenrota.verify that wants them too (401 DPoP use_dpop_nonce): each first call is
    retried once with the nonce given, later calls carry it at once, a new nonce costs one retry
    again, but none when a success announced it; a server that asks for yet another nonce on
    the retry gets its answer returned."""
    listener, origin = free_listener()
    service = LiveServer(origin)
    gate = NonceGate(service_app(settings, origin), {"/login", "/refresh"}, token_endpoint=True)
    api_listener, api_origin = free_listener()
    api = LiveServer(api_origin)
    api_gate = Middleware(NonceGate, paths={"/data"}, name="api")
    async with (
        serving(gate, listener, service),
        serving(api_app(settings, origin, api_gate), api_listener, api),
    ):
        email = await new_account(service)
        page = await open_app(context, service, api_origin)
        await log_in(page, email)
        logins, asked_at_login = service.count("/login", "POST"), gate.asked
        data = f"{api_origin}/data"
        answers = [await statuses(page, data), await statuses(page, data)]
        calls_before_rotation = api.count("/data", "GET")
        NonceGate.made["api"].nonce = "second-nonce"
        answers.append(await statuses(page, data))
        calls_after_rotation = api.count("/data", "GET")
        NonceGate.made["api"].next_nonce = "announced-nonce"
        answers.append(await statuses(page, data))  # with second-nonce, told of the next
        NonceGate.made["api"].nonce, NonceGate.made["api"].next_nonce = "announced-nonce", None
        answers.append(await statuses(page, data))  # with announced-nonce at once
        calls_after_announcement = api.count("/data", "GET")
        NonceGate.made["api"].rotate_on_refusal = True
        NonceGate.made["api"].nonce = "third-nonce"
        answers.append(await statuses(page, data))
        calls_at_the_end = api.count("/data", "GET")

    assert (logins, asked_at_login) == (2, 1)
    assert answers == [[200], [200], [200], [200], [200], [401]]
    assert calls_before_rotation == 2 + 1  # the first retried, the second with the nonce at once
    assert calls_after_rotation == calls_before_rotation + 2
    assert calls_after_announcement == calls_after_rotation + 2  # no retry
    assert calls_at_the_end == calls_after_announcement + 2  # one retry, never a loop
    assert await connection.fetchval("SELECT count(*) FROM sessions") == 1


async def test_with_the_services_nonces_and_an_apis_the_session_works_and_a_bearer_login_fails(
    context: BrowserContext, settings: Settings, connection: asyncpg.Connection
) -> None:
    """DPOP_NONCE and DPOP_REQUIRED_FOR_SESSIONS at the service, dpop_nonces at an API built with
    tokenrota.verify: the login is retried once with the service's nonce and /profile carries it
    at once; a new tab's refresh is retried once, and its first API call too, with the API's own
    nonce, which its next call carries at once; a client without dpop cannot log in at all."""
    listener, origin = free_listener()
    service = LiveServer(origin)
    strict = service_app(settings, origin, dpop_nonce=True, dpop_required_for_sessions=True)
    api_listener, api_origin = free_listener()
    api = LiveServer(api_origin)
    nonces = Nonces(b"the API's own nonce secret, 32 bytes or more")
    async with (
        serving(strict, listener, service),
        serving(api_app(settings, origin, nonces=nonces), api_listener, api),
    ):
        email = await new_account(service)
        page = await open_app(context, service, api_origin)
        await log_in(page, email)
        profile = await statuses(page, "/profile")
        # A new tab knows no nonce: it refreshes (asked for one) before its first API call.
        tab = await open_app(context, service, api_origin)
        data = await statuses(tab, f"{api_origin}/data")
        again = await statuses(tab, f"{api_origin}/data")
        refused = await page.evaluate(
            """async ([email, password]) => {
                const { createAuthClient } = await import("/auth-client.js");
                try {
                    await createAuthClient().login(email, password);
                    return "logged in";
                } catch (error) {
                    return [error.status, error.code];
                }
            }""",
            [email, PASSWORD],
        )

    logins = [proof_claims(headers["dpop"]) for headers in service.headers("/login")[:-1]]
    profiles = [proof_claims(headers["dpop"]) for headers in service.headers("/profile")]
    refreshes = [proof_claims(headers["dpop"]) for headers in service.headers("/refresh")]
    calls = [proof_claims(h["dpop"]) for method, _, h in api.requests if method == "GET"]
    assert [("nonce" in claims) for claims in logins] == [False, True]
    assert profile == data == again == [200]
    assert [("nonce" in claims) for claims in profiles] == [True]  # remembered from /login
    assert [("nonce" in claims) for claims in refreshes] == [False, True]
    assert [("nonce" in claims) for claims in calls] == [False, True, True]
    assert refused == [400, "invalid_dpop_proof"]
    assert "dpop" not in service.headers("/login")[-1]
    assert await connection.fetchval("SELECT count(*) FROM sessions") == 1
