"""The operators' console in headless Chromium, as an operator uses it: signing in with a password
and TOTP, finding a user, revoking their sessions (a resource server following the revocation
feed then refuses their token), disabling them, rotating a client's secret, inviting a user who
follows the mailed link; signing in with a passkey, second or alone, and being asked to sign in
again once their session is revoked. Hostile data (markup and script in an email, a session's
name and user agent, metadata, a client's name) shows as text and runs nothing. axe-core (npm)
checks each screen for accessibility: no serious or critical violation.

The service runs in this test's loop (tests/e2e/test_browser.py's `serving`), mail goes to the
aiosmtpd server of the mail tests, sent by explicit drainer rounds. Set CONSOLE_SCREENSHOTS=
docs/console to refresh the manual's screenshots (`make screenshots`), CONSOLE_AXE_REPORT=<file>
to keep axe's findings per screen as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect
from tokenrota_server import totp
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

from tests.admin_support import admin_client, insert_users
from tests.db.test_outbox import deliver, smtp_settings
from tests.e2e.test_browser import (  # noqa: F401 - fixtures used by name
    LiveServer,
    browser,
    free_listener,
    serving,
)
from tests.e2e.test_js_package import tool
from tests.e2e.test_passkeys_browser import virtual_authenticator, webauthn_session
from tests.mail_support import SmtpServer, parts_of
from tests.oauth_support import create_client
from tests.resource_server import build_app
from tests.support import PASSWORD, FakeClock

# One worker runs the module, so axe-core is installed once.
pytestmark = pytest.mark.xdist_group("console")
AXE_PACKAGE = "axe-core@4.10.2"  # pinned: the rules of one known release
BLOCKING = ("serious", "critical")
NEW_PASSWORD = "an invited passphrase"
WAIT = 10.0  # seconds: the longest a test waits for the feed to reach the resource server
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_SCRIPT = "<script>alert('script')</script>"


@pytest.fixture(scope="session")
def axe_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """axe.min.js from the npm registry, installed once per run (npm's cache makes it quick)."""
    directory = tmp_path_factory.mktemp("axe")
    install = [tool("npm"), "install", "--no-audit", "--no-fund", "--ignore-scripts", AXE_PACKAGE]
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        install, cwd=directory, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"npm install {AXE_PACKAGE} failed: {result.stderr}"
    return (directory / "node_modules" / "axe-core" / "axe.min.js").read_text()


@dataclass
class Console:
    """The service serving the console, its settings, and an HTTP client of its origin."""

    live: LiveServer
    settings: Settings
    http: httpx.AsyncClient
    admin: dict[str, str]  # an admin client's bearer header, to arrange what the test needs


@pytest.fixture
def console_token_ttl(settings: Settings) -> int:
    """The access tokens' lifetime (a test may parametrize a short one)."""
    return settings.access_token_ttl


@pytest.fixture
async def console(
    settings: Settings, smtp_server: SmtpServer, db: asyncpg.Connection, console_token_ttl: int
) -> AsyncIterator[Console]:
    """The service on 127.0.0.1:<free port>, its public URL that origin (the invitation links
    to its demo page), mail to the test SMTP server."""
    listener, _ = free_listener()
    # localhost: a secure context for WebAuthn without TLS, and the passkeys' RP id.
    origin = f"http://localhost:{listener.getsockname()[1]}"
    live = LiveServer(origin)
    served = replace(
        smtp_settings(settings, smtp_server),
        public_url=origin,
        allowed_origins=(origin,),
        webauthn_rp_id="localhost",
        jwt_leeway=0,
        access_token_ttl=console_token_ttl,
    )
    async with (
        serving(create_app(served), listener, live),
        httpx.AsyncClient(base_url=origin) as http,
    ):
        _, admin = await admin_client(http, db, served)
        yield Console(live, served, http, admin)


@dataclass
class Operator:
    email: str
    secret: str
    enrolled_step: int

    def code(self) -> str:
        """A code the service has not accepted yet: a step after the enrolment's."""
        step = max(self.enrolled_step + 1, totp.step_of(datetime.now(UTC)))
        return totp.code_at(self.secret, step)


async def make_operator(console: Console, user_id: str) -> None:
    """Grant the user the role `operator`, whose one scope is admin (made if missing)."""
    role = await console.http.put(
        "/admin/roles/operator",
        json={"scopes": ["admin"], "require_mfa": True},
        headers=console.admin,
    )
    assert role.status_code in (200, 201), role.text
    granted = await console.http.put(
        f"/admin/users/{user_id}/roles", json={"roles": ["operator"]}, headers=console.admin
    )
    assert granted.status_code == 200, granted.text


async def create_operator(console: Console) -> Operator:
    """A person holding a role with the admin scope, with a live TOTP factor."""
    http = console.http
    email = f"operator-{uuid.uuid4().hex[:8]}@example.com"
    user = await register(http, email)
    pair = (await http.post("/login", json={"email": email, "password": PASSWORD})).json()
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    started = await http.post("/mfa/totp", json={}, headers=bearer)
    assert started.status_code == 201, started.text
    factor_id, secret = started.json()["factor_id"], started.json()["secret"]
    step = totp.step_of(datetime.now(UTC))
    verified = await http.post(
        f"/mfa/totp/{factor_id}/verify",
        json={"code": totp.code_at(secret, step)},
        headers=bearer,
    )
    assert verified.status_code == 200, verified.text
    await make_operator(console, user["id"])
    return Operator(email, secret, step)


async def register(http: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await http.post("/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


async def sign_in(
    page: Page, console: Console, operator: Operator, audit: Audit | None = None
) -> None:
    """Through the console's forms: email and password, then the authenticator's code (the
    second step's screen checked by `audit` when given)."""
    await page.goto(f"{console.live.origin}/console")
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    await page.get_by_label("Email", exact=True).fill(operator.email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Second factor", exact=True)).to_be_visible()
    if audit is not None:
        await audit.check(page, "second-factor")
        await screenshot(page, "second-factor")
    await page.get_by_label("Code from your authenticator app").fill(operator.code())
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()


class Audit:
    """axe-core's findings per screen; none serious or critical is allowed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.findings: dict[str, list[dict[str, Any]]] = {}

    async def check(self, page: Page, screen: str) -> None:
        # Evaluated through the DevTools protocol, which the page's CSP does not govern.
        violations: list[dict[str, Any]] = await page.evaluate(
            self.source
            + """
            ;(async () => {
                const result = await axe.run(document, { resultTypes: ["violations"] });
                return result.violations.map((v) => ({
                    id: v.id, impact: v.impact, nodes: v.nodes.length,
                    targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
                }));
            })()
            """
        )
        self.findings[screen] = violations
        # Nothing the page meant to leave out shows as a word (data aside: code, fields).
        stray = await page.evaluate(
            """() => {
                const words = /\\b(null|undefined|NaN)\\b|\\[object Object\\]/;
                const walker = document.createTreeWalker(document.querySelector("main"),
                    NodeFilter.SHOW_TEXT);
                const found = [];
                while (walker.nextNode()) {
                    const node = walker.currentNode;
                    if (node.parentElement.closest("code, output, textarea")) continue;
                    if (words.test(node.data)) found.push(node.data);
                }
                return found.length ? found : null;
            }"""
        )
        assert stray is None, f"{screen} shows {stray}"
        blocking = [v for v in violations if v["impact"] in BLOCKING]
        assert blocking == [], f"axe on {screen}: {blocking}"

    def keep(self) -> None:
        report = os.environ.get("CONSOLE_AXE_REPORT")
        if report:
            Path(report).write_text(json.dumps(self.findings, indent=2) + "\n")


async def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


async def refused_within(http: httpx.AsyncClient, token: str, seconds: float) -> int:
    """Ask the resource server with `token` until it refuses (its follower caught up); the
    status. Fails after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        answer = await http.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        if answer.status_code != 200:
            return answer.status_code
        assert loop.time() < deadline, "the resource server still accepts the revoked token"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def resource_server(
    console: Console, db: asyncpg.Connection
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """tests/resource_server.py registered as a resource and following the revocation feed:
    an HTTP client of it, and its URI."""
    listener, origin = free_listener()
    uri = f"{origin}/api"
    created = await console.http.post(
        "/admin/resources", json={"uri": uri, "name": "orders", "scopes": []}, headers=console.admin
    )
    assert created.status_code == 201, created.text
    client_id, secret = await create_client(db, console.settings, scope="revocations:read")
    environ = {
        "SERVICE_URL": console.live.origin,
        "CLIENT_ID": client_id,
        "CLIENT_SECRET": secret,
        "ACCESS_TOKEN_SECRET": str(console.settings.access_token_secret),
        "TOKEN_ISSUER": console.settings.token_issuer,
        "TOKEN_AUDIENCE": uri,
        "FEED_WAIT": "1",
    }
    async with (
        serving(build_app(environ), listener, LiveServer(origin)),
        httpx.AsyncClient(base_url=origin) as http,
    ):
        yield http, uri


async def client_token(http: httpx.AsyncClient, client_id: str, secret: str) -> int:
    answer = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return answer.status_code


async def confirm(page: Page, button: str) -> None:
    """Press the confirming button of the console's dialog."""
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name=button).click()
    await expect(dialog).to_have_count(0)


async def test_an_operator_revokes_disables_rotates_and_invites(
    browser: BrowserContext,  # noqa: F811
    console: Console,
    db: asyncpg.Connection,
    smtp_server: SmtpServer,
    axe_source: str,
) -> None:
    """The operator's day in the console, each screen checked by axe-core."""
    audit = Audit(axe_source)
    page = browser.pages[0] if browser.pages else await browser.new_page()
    operator = await create_operator(console)
    ada = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    await register(console.http, ada)

    await page.goto(f"{console.live.origin}/console")
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    await audit.check(page, "sign-in")
    await screenshot(page, "sign-in")
    await sign_in(page, console, operator, audit)
    # The tokens are in the page's memory only.
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert await page.evaluate("document.cookie") == ""
    assert await browser.cookies() == []
    assert await page.evaluate("indexedDB.databases().then((found) => found.length)") == 0

    async with resource_server(console, db) as (api, uri):
        login = await console.http.post(
            "/login",
            json={"email": ada, "password": PASSWORD, "resource": uri},
            headers={"User-Agent": "Ada's laptop"},
        )
        assert login.status_code == 200, login.text
        ada_pair = login.json()
        assert (await api.get("/whoami", headers=bearer(ada_pair))).status_code == 200

        # Users: search, open Ada.
        await page.get_by_label("Email starts with").fill(ada[:8].upper())
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("link", name=ada).click()
        await expect(page.get_by_role("heading", name=ada)).to_be_visible()
        await expect(page.get_by_role("cell", name="Ada's laptop")).to_be_visible()
        await audit.check(page, "user")
        await screenshot(page, "user")

        # app_metadata as JSON: what is not JSON is refused in the page, an object saved.
        metadata = page.get_by_label("app_metadata")
        await metadata.fill("{plan: pro}")
        await page.get_by_role("button", name="Save app_metadata").click()
        await expect(page.get_by_role("alert")).to_have_text("That is not JSON.")
        await metadata.fill('{"plan": "pro"}')
        await page.get_by_role("button", name="Save app_metadata").click()
        await expect(page.get_by_role("status")).to_contain_text("app_metadata saved.")
        ada_id = page.url.rsplit("/", 1)[1]
        shown = await console.http.get(f"/admin/users/{ada_id}", headers=console.admin)
        assert shown.json()["app_metadata"] == {"plan": "pro"}

        # A password reset link, mailed to Ada.
        await page.get_by_role("button", name="Send password reset").click()
        await expect(page.get_by_role("status")).to_contain_text("password reset link")
        assert await deliver(console.settings, FakeClock()) == 1
        [reset] = smtp_server.inbox.messages
        assert reset["To"] == ada

        # Revoke every session: the refresh token dies now, the resource server refuses the
        # access token once its follower has read the feed.
        await page.get_by_role("button", name="Revoke all sessions").click()
        await confirm(page, "Revoke all sessions")
        await expect(page.get_by_role("status")).to_contain_text("Every session was revoked.")
        assert await refused_within(api, ada_pair["access_token"], WAIT) == 403
        refreshed = await console.http.post(
            "/refresh", json={"refresh_token": ada_pair["refresh_token"]}
        )
        assert refreshed.status_code == 403

    # Disable, from the keyboard: the dialog takes the focus (on Cancel), Tab reaches the
    # confirming button, and the focus comes back to the page. Ada can no longer sign in.
    await page.get_by_role("button", name="Disable").focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=f"Disable {ada}?")
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await expect(page.get_by_role("button", name="Disable")).to_be_focused()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await expect(dialog.get_by_role("button", name="Disable")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(dialog).to_have_count(0)
    await expect(page.get_by_role("heading", name=ada)).to_be_focused()
    await expect(page.locator(".facts")).to_contain_text("disabled")
    again = await console.http.post("/login", json={"email": ada, "password": PASSWORD})
    assert again.status_code == 401

    await page.get_by_role("link", name="Users", exact=True).click()
    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name=ada)).to_be_visible()
    await audit.check(page, "users")
    await screenshot(page, "users")

    # OAuth clients: create one (its secret shown once), rotate with a grace period: both
    # secrets work; rotate with none: the one before stops at once.
    await page.get_by_role("link", name="OAuth clients").click()
    await page.get_by_label("Name", exact=True).fill("billing")
    await page.get_by_label("Scopes").fill("invoices:read")
    await page.get_by_role("button", name="Create client").click()
    first_secret = await page.locator(".secret-value").text_content()
    client_id = await page.locator(".notice code").text_content()
    assert first_secret
    assert client_id
    assert await client_token(console.http, client_id, first_secret) == 200
    await audit.check(page, "clients")
    await screenshot(page, "clients")
    await page.locator("#client-list").get_by_role("link", name="billing").click()
    await expect(page.get_by_role("heading", name="billing")).to_be_visible()
    await page.get_by_label("Grace period").fill("3600")
    await page.get_by_role("button", name="Rotate secret").click()
    await expect(page.locator(".secret-value")).to_be_visible()
    second_secret = await page.locator(".secret-value").text_content()
    assert second_secret
    assert second_secret != first_secret
    assert await client_token(console.http, client_id, second_secret) == 200
    assert await client_token(console.http, client_id, first_secret) == 200  # the grace period
    # A grant: the client may now get tokens for the orders API.
    await page.get_by_label("Resource", exact=True).select_option(label=f"orders ({uri})")
    await page.get_by_label("Kind").select_option("token")
    await page.get_by_role("button", name="Save grant").click()
    await expect(page.get_by_role("cell", name=uri, exact=True)).to_be_visible()
    granted = await console.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "resource": uri},
        auth=(client_id, second_secret),
    )
    assert granted.status_code == 200, granted.text
    await audit.check(page, "client")
    await screenshot(page, "client")
    await page.get_by_label("Grace period").fill("0")
    await page.get_by_role("button", name="Rotate secret").click()
    await expect(page.locator(".secret-value")).not_to_have_text(second_secret)
    third_secret = await page.locator(".secret-value").text_content()
    assert third_secret
    assert await client_token(console.http, client_id, third_secret) == 200
    assert await client_token(console.http, client_id, second_secret) == 401
    assert await client_token(console.http, client_id, first_secret) == 401

    # Roles and resources: listed; a held role's deletion is refused, plainly.
    await page.get_by_role("link", name="Roles").click()
    await expect(page.get_by_role("cell", name="operator", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Delete operator").click()
    await confirm(page, "Delete role")
    await expect(page.get_by_role("alert")).to_contain_text("still held by users")
    await audit.check(page, "roles")
    await screenshot(page, "roles")
    await page.get_by_label("Name", exact=True).fill("support")
    await page.get_by_label("Scopes", exact=True).fill("tickets:read tickets:write")
    await page.get_by_role("button", name="Save role").click()
    await expect(page.get_by_role("cell", name="tickets:read tickets:write")).to_be_visible()

    await page.get_by_role("link", name="Resources").click()
    await expect(page.get_by_role("cell", name="orders")).to_be_visible()
    await page.get_by_label("URI").fill("https://billing.example/api")
    await page.get_by_label("Name", exact=True).fill("billing")
    await page.get_by_label("Scopes", exact=True).fill("invoices:read")
    await page.get_by_role("button", name="Register resource").click()
    await expect(page.get_by_role("cell", name="billing", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Edit https://billing.example/api").click()
    await page.get_by_label("Name", exact=True).fill("invoices")
    await page.get_by_role("button", name="Save resource").click()
    await expect(page.get_by_role("cell", name="invoices", exact=True)).to_be_visible()
    await audit.check(page, "resources")
    await screenshot(page, "resources")

    # The audit log, filtered by action.
    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Action").select_option("sessions_revoked")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#audit-results tbody tr")).to_have_count(1)
    await audit.check(page, "audit")
    await screenshot(page, "audit")

    # Invite a user; they follow the mailed link, choose a password and sign in.
    grace = f"grace-{uuid.uuid4().hex[:8]}@example.com"
    await page.get_by_role("link", name="Create or invite").click()
    await page.get_by_label("Email", exact=True).fill(grace)
    await page.get_by_role("button", name="Create user").click()
    await expect(page.locator(".notice")).to_contain_text(f"Invitation sent to {grace}")
    await expect(page.get_by_label("Mail an invitation")).to_be_checked()  # reset to its default
    await audit.check(page, "invite")
    await screenshot(page, "invite")
    assert await deliver(console.settings, FakeClock()) == 1
    message = smtp_server.inbox.messages[-1]
    assert message["To"] == grace
    link = next(word for word in parts_of(message)[0].split() if "token=" in word)
    assert link.startswith(f"{console.live.origin}/demo?")
    invited = await browser.new_page()
    await invited.goto(link)
    await invited.fill("#new-password", NEW_PASSWORD)
    await invited.locator("#reset-form button[type=submit]").click()
    await expect(invited.locator("#log")).to_contain_text("POST /password/reset -> 204")
    await invited.fill("#email", grace)
    await invited.fill("#password", NEW_PASSWORD)
    await invited.click("#login")
    await expect(invited.locator("#who")).to_have_text(f"{grace} (verified)")

    # A reload forgets the tokens: the console asks to sign in again.
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    audit.keep()


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def test_hostile_data_shows_as_text_and_runs_nothing(
    browser: BrowserContext,  # noqa: F811
    console: Console,
    db: asyncpg.Connection,
) -> None:
    """Markup in an email (written behind the API's back, as the grammar refuses it), a
    session's name and user agent, app_metadata keys and values, and a client's name: the
    console shows each as the characters it is; no element is injected, no dialog opens, the
    CSP reports nothing."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    operator = await create_operator(console)
    victim = await register(console.http, f"mallory-{uuid.uuid4().hex[:8]}@example.com")
    pair = (
        await console.http.post(
            "/login",
            json={"email": victim["email"], "password": PASSWORD},
            headers={"User-Agent": HOSTILE_SCRIPT},
        )
    ).json()
    [session] = (await console.http.get("/sessions", headers=bearer(pair))).json()["sessions"]
    named = await console.http.patch(
        f"/sessions/{session['id']}", json={"name": HOSTILE}, headers=bearer(pair)
    )
    assert named.status_code == 200, named.text
    metadata = {HOSTILE: HOSTILE_SCRIPT, "note": "</textarea><img src=x onerror=alert(2)>"}
    patched = await console.http.patch(
        f"/admin/users/{victim['id']}", json={"app_metadata": metadata}, headers=console.admin
    )
    assert patched.status_code == 200, patched.text
    hostile_email = f"{HOSTILE}{HOSTILE_SCRIPT}@example.com"
    await db.execute("UPDATE users SET email = $1 WHERE id = $2", hostile_email, victim["id"])
    created = await console.http.post(
        "/admin/clients", json={"name": HOSTILE_SCRIPT, "scopes": []}, headers=console.admin
    )
    assert created.status_code == 201, created.text

    await insert_users(db, 25)  # after the others: the victim stays on the first page

    await sign_in(page, console, operator)
    # Paging: 20 users a page, oldest first.
    rows = page.locator("#user-results tbody tr")
    await expect(rows).to_have_count(20)
    await page.get_by_role("button", name="Next page").click()
    await expect(page.get_by_role("table", name="Users, page 2")).to_be_visible()
    await expect(rows).to_have_count(7)
    await expect(page.get_by_role("button", name="Next page")).to_have_count(0)
    await page.get_by_role("button", name="Previous page").click()
    await expect(page.get_by_role("table", name="Users, page 1")).to_be_visible()
    await page.evaluate(
        """() => {
            window.violations = [];
            document.addEventListener("securitypolicyviolation",
                (event) => window.violations.push(event.violatedDirective));
        }"""
    )
    await expect(page.get_by_role("link", name=hostile_email)).to_be_visible()
    await page.get_by_role("link", name=hostile_email).click()
    await expect(page.get_by_role("heading", name=hostile_email)).to_be_visible()
    await expect(page.get_by_role("cell", name=HOSTILE, exact=True)).to_be_visible()
    await expect(page.get_by_role("cell", name=HOSTILE_SCRIPT, exact=True)).to_be_visible()
    saved = json.loads(await page.get_by_label("app_metadata").input_value())
    assert saved == metadata
    await expect(page.locator("#main")).to_contain_text("app_metadata_set")
    await assert_nothing_injected(page)

    await page.get_by_role("link", name="OAuth clients").click()
    await expect(page.get_by_role("link", name=HOSTILE_SCRIPT)).to_be_visible()
    await assert_nothing_injected(page)
    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    await assert_nothing_injected(page)

    # Erasing them: the confirmation names them, as text.
    await page.get_by_role("link", name="Users", exact=True).click()
    await page.get_by_role("link", name=hostile_email).click()
    await page.get_by_role("button", name="Erase…").click()
    dialog = page.get_by_role("dialog", name=f"Erase {hostile_email}?")
    await expect(dialog).to_be_visible()
    await assert_nothing_injected(page, "dialog")
    await dialog.get_by_role("button", name=f"Erase {hostile_email}").click()
    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text(f"{hostile_email} was erased.")
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", victim["id"]) == 0
    assert dialogs == []
    assert await page.evaluate("window.violations") == []


async def assert_nothing_injected(page: Page, within: str = "main") -> None:
    """No element the hostile strings would have made, had they been parsed as HTML."""
    made = await page.evaluate(
        "(within) => document.querySelectorAll("
        "['img', 'script', 'svg', 'iframe'].map((tag) => `${within} ${tag}`).join(', ')).length",
        within,
    )
    assert made == 0


# Under the console's 30-second margin: each screen refreshes the token before its calls.
@pytest.mark.parametrize("console_token_ttl", [20])
async def test_an_operator_signs_in_with_a_passkey_second_or_alone(
    browser: BrowserContext,  # noqa: F811
    console: Console,
) -> None:
    """A passkey registered by the operator (through auth-client.js, on the service's origin) is
    their second factor after the password, and signs them in on its own (no email, no
    password); the admin API accepts either token, and the refreshed ones. Once their sessions
    are revoked, the console asks them to sign in again."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await virtual_authenticator(await webauthn_session(page))
    email = f"passkey-operator-{uuid.uuid4().hex[:8]}@example.com"
    user = await register(console.http, email)
    await page.goto(f"{console.live.origin}/console")
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    await page.evaluate(
        """async ([email, password]) => {
            const { createAuthClient } = await import("/auth-client.js");
            const auth = createAuthClient({});
            await auth.login(email, password);
            await auth.registerPasskey("operator's laptop");
            await auth.logout();
        }""",
        [email, PASSWORD],
    )
    await make_operator(console, user["id"])

    # The password, then the passkey as the second factor.
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("button", name="Use a passkey instead").click()
    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()

    # The passkey alone.
    await page.get_by_role("button", name="Sign in with a passkey").click()

    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name=email)).to_be_visible()
    await expect(page.locator("#who")).to_have_text(f"Signed in as {email}")
    # The short-lived token was renewed for the admin API's audience, in the body.
    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    refreshes = console.live.headers("/refresh")
    assert refreshes
    assert all("cookie" not in headers for headers in refreshes)

    # Their sessions revoked (by another operator's tool): the next screen asks to sign in.
    revoked = await console.http.delete(
        f"/admin/users/{user['id']}/sessions", headers=console.admin
    )
    assert revoked.status_code == 204
    await page.get_by_role("link", name="Roles").click()
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    await expect(page.locator(".notice")).to_contain_text(re.compile("sign in again", re.I))
    await expect(page.get_by_role("navigation")).to_be_hidden()
