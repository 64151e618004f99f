"""Passkeys end to end in headless Chromium: the DevTools virtual authenticator (a CDP session's
WebAuthn domain: ctap2, internal, a resident key, user verification) behind auth-client.js, on a
page at http://localhost (WebAuthn's secure context without TLS), against a real server.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import BrowserContext, CDPSession, Page, async_playwright, expect
from starlette.responses import HTMLResponse
from tokenrota_server import totp
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

from tests.conftest import PASSWORD
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, serving

# The app's page: the client as a module, reachable from the test as window.auth.
APP_PAGE = """<!doctype html><meta charset='utf-8'><title>passkeys</title>
<script type="module">
  import { createAuthClient } from "/auth-client.js";
  window.auth = createAuthClient();
  window.ready = true;
</script>"""


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    """The service at http://localhost:<free port>, its own origin the passkeys' origin."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    origin = f"http://localhost:{listener.getsockname()[1]}"
    live = LiveServer(origin)
    app = create_app(replace(settings, allowed_origins=(origin,), webauthn_rp_id="localhost"))

    async def with_app_page(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/app":
            await HTMLResponse(APP_PAGE)(scope, receive, send)
        else:
            await app(scope, receive, send)

    async with serving(with_app_page, listener, live):
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
        )
        try:
            yield context
        finally:
            await context.close()


async def app_page(browser: BrowserContext, server: LiveServer) -> Page:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(f"{server.origin}/app")
    await page.wait_for_function("window.ready === true")
    return page


async def webauthn_session(page: Page) -> CDPSession:
    """A DevTools session on `page` with the WebAuthn domain on (no browser dialogs)."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    return cdp


async def virtual_authenticator(cdp: CDPSession) -> str:
    """A platform authenticator with a resident key and user verification, answering alone;
    its id."""
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    authenticator_id: str = added["authenticatorId"]
    return authenticator_id


async def signed_up(page: Page) -> str:
    """Register and log in through the client; the email."""
    email = f"passkey-{os.urandom(4).hex()}@example.com"
    await page.evaluate(
        """async ([email, password]) => {
            const response = await fetch("/register", {
                method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ email, password }),
            });
            if (response.status !== 201) throw new Error(await response.text());
            await window.auth.login(email, password);
        }""",
        [email, PASSWORD],
    )
    return email


async def test_a_passkey_registers_completes_a_login_signs_in_alone_and_its_clone_is_refused(
    browser: BrowserContext, server: LiveServer, db: asyncpg.Connection
) -> None:
    """Register a passkey; the step-up callback answers RFC 9470's challenge with it; a password
    login then answers mfa_required and the passkey completes it; the passkey alone signs in (no
    email, no password); a clone of the authenticator whose counter is behind is refused and
    audited."""
    page = await app_page(browser, server)
    cdp = await webauthn_session(page)
    authenticator_id = await virtual_authenticator(cdp)
    email = await signed_up(page)

    registered = await page.evaluate("window.auth.registerPasskey('this laptop')")
    # The session is still the password's (aal1): adding a factor now needs a step-up, which
    # the app's callback answers with the passkey.
    enrolment = await page.evaluate(
        """async () => {
            const asked = [];
            window.auth.onStepUp((challenge) => {
                asked.push(challenge);
                return { passkey: true };
            });
            const enrolment = await window.auth.enrollTotp();
            return { asked, started: typeof enrolment.factor_id === "string" };
        }"""
    )
    await page.evaluate("window.auth.logout()")
    second_factor = await page.evaluate(
        """async ([email, password]) => {
            try {
                await window.auth.login(email, password);
                return "no second factor asked";
            } catch (error) {
                if (error.code !== "mfa_required") throw error;
                await window.auth.completeMfa(error.mfaToken, { passkey: true });
                return error.factors.map((factor) => factor.type);
            }
        }""",
        [email, PASSWORD],
    )
    await page.evaluate("window.auth.logout()")
    await page.evaluate("window.auth.loginWithPasskey()")
    profile = await page.evaluate("window.auth.fetch('/profile').then((r) => r.status)")
    (credential,) = (
        await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    )["credentials"]
    await page.evaluate("window.auth.loginWithPasskey()")
    # The clone: the same key, its counter where it was before the last sign-in.
    await cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator_id})
    clone_id = await virtual_authenticator(cdp)
    await cdp.send(
        "WebAuthn.addCredential", {"authenticatorId": clone_id, "credential": credential}
    )
    refused = await page.evaluate(
        "window.auth.loginWithPasskey().then(() => 'accepted', (error) => error.code)"
    )

    assert registered["factor"]["type"] == "passkey"
    assert registered["factor"]["name"] == "this laptop"
    assert len(registered["recovery_codes"]) == 10
    assert enrolment == {"asked": [{"acrValues": "aal2", "maxAge": 300}], "started": True}
    assert second_factor == ["passkey"]
    assert profile == 200
    assert refused == "invalid_passkey"
    reasons = await db.fetch(
        "SELECT details->>'reason' AS reason FROM audit_events WHERE action = 'passkey_refused'"
    )
    assert [row["reason"] for row in reasons] == ["counter"]
    amr = await db.fetch("SELECT amr FROM sessions")
    assert sorted(list(row["amr"]) for row in amr) == [
        ["hwk", "user"],  # the passkey alone, twice
        ["hwk", "user"],
        ["pwd", "hwk", "mfa", "user"],  # the password session, stepped up
        ["pwd", "hwk", "mfa", "user"],  # the password, then the passkey
    ]


async def test_the_demo_page_does_every_second_factor(
    browser: BrowserContext, server: LiveServer
) -> None:
    """On /demo: add a passkey (the first factor: recovery codes shown), add an authenticator
    app from its QR code (a step-up answered with the passkey first), then sign in with the
    password and a code, a recovery code, or the passkey, and with the passkey alone."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    cdp = await webauthn_session(page)
    await virtual_authenticator(cdp)
    answers: list[str] = []

    async def answer(dialog: Any) -> None:
        await dialog.accept(answers.pop(0))

    page.on("dialog", answer)
    email = f"demo-{os.urandom(4).hex()}@example.com"
    await page.goto(f"{server.origin}/demo")
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("#register")
    await expect(page.locator("#log")).to_contain_text("POST /register -> 201")

    async def log_in(how: str) -> None:
        await page.fill("#email", email)
        await page.fill("#password", PASSWORD)
        await page.click("#login")
        if how != "password":
            await expect(page.locator("#second-factor")).to_be_visible()
            if how == "code":
                step = totp.step_of(datetime.now(UTC))
                await page.fill("#mfa-code", totp.code_at(secret, step + 1))
                await page.click("#mfa-submit-code")
            elif how == "recovery":
                await page.fill("#mfa-code", recovery[0])
                await page.click("#mfa-submit-recovery")
            else:
                await page.click("#mfa-passkey")
        await expect(page.locator("#who")).to_have_text(email)

    await log_in("password")
    answers.append("laptop")
    await page.click("#register-passkey")
    await expect(page.locator("#recovery-codes")).to_be_visible()
    recovery = (await page.locator("#recovery-codes").text_content() or "").splitlines()[1:]
    answers.append("")  # the step-up's prompt: empty for the passkey
    await page.click("#enroll-totp")
    await expect(page.locator("#totp-qr svg")).to_be_visible()
    secret = await page.locator("#totp-secret").text_content() or ""
    await page.fill("#totp-code", totp.code_at(secret, totp.step_of(datetime.now(UTC))))
    await page.click("#totp-verify")
    await expect(page.locator("#factors tr")).to_have_count(2)
    for how in ("code", "recovery", "passkey"):
        await page.click("#logout")
        await log_in(how)
    await page.click("#logout")
    await page.click("#passkey-login")

    await expect(page.locator("#who")).to_have_text(email)
    assert len(recovery) == 10
