"""Password reset and email verification under attack: the four endpoints, their tokens (single
use, expiry, supersession, purpose), the sessions a reset ends, the throttles, bad input, and
REQUIRE_VERIFIED_EMAIL. Messages are read from the outbox (sealed) as the drainer would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.checks import assert_error, post_json
from tests.http.test_login import HOSTILE_EMAILS
from tests.mail_support import queued_token
from tests.support import PASSWORD, FakeClock, TableSnapshot, login, register, serve

NEW_PASSWORD = "a brand new passphrase"
UNKNOWN = "nobody-here@example.com"


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


@pytest.fixture
def quiet_settings(settings: Settings) -> Settings:
    """The test settings with no background drainer: messages stay in the outbox to be read."""
    return replace(settings, mail_poll_interval=0)


@pytest.fixture
async def client(quiet_settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(quiet_settings, clock) as client:
        yield client


async def forgot(client: httpx.AsyncClient, email: str, **headers: str) -> httpx.Response:
    return await client.post("/password/forgot", json={"email": email}, headers=headers)


async def reset(client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD) -> Any:
    return await client.post("/password/reset", json={"token": token, "new_password": password})


async def reset_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, email: str
) -> str:
    response = await forgot(client, email)
    assert response.status_code == 202, response.text
    return await queued_token(db, settings, email)


async def rows(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The recovery tables, to compare before and after bad input."""
    return {
        table: [tuple(row) for row in await db.fetch(f"SELECT * FROM {table} ORDER BY 1")]  # noqa: S608
        for table in ("account_tokens", "mail_outbox")
    }


# -- forgot ---------------------------------------------------------------------------------


async def test_forgot_answers_the_same_for_known_and_unknown_emails(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """202 `{}`, the same headers; only the known, active user gets a message."""
    user = await register(client)

    known = await forgot(client, user["email"])
    unknown = await forgot(client, UNKNOWN)

    assert (known.status_code, unknown.status_code) == (202, 202)
    assert known.content == unknown.content == b"{}"
    drop = {"x-request-id", "content-length"}
    assert {k: v for k, v in known.headers.items() if k not in drop} == {
        k: v for k, v in unknown.headers.items() if k not in drop
    }
    queued = await db.fetch("SELECT recipient, user_id FROM mail_outbox")
    assert [(row["recipient"], str(row["user_id"])) for row in queued] == [
        (user["email"], user["id"])
    ]


async def test_a_token_is_stored_only_as_its_digest(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    user = await register(client)

    token = await reset_token(client, db, quiet_settings, user["email"])

    row = await db.fetchrow("SELECT * FROM account_tokens")
    assert len(token) == 43
    assert row["purpose"] == "password_reset"
    assert len(row["token_digest"]) == 32
    assert token.encode() not in b"".join(str(v).encode() for v in row.values())


async def test_a_disabled_user_gets_no_message(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user = await register(client)
    await db.execute("UPDATE users SET disabled_at = now()")

    response = await forgot(client, user["email"])

    assert response.status_code == 202
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 0


async def test_the_link_comes_from_settings_never_from_the_host_header(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    user = await register(client)

    response = await forgot(client, user["email"], host="evil.example")
    token = await queued_token(db, quiet_settings, user["email"])

    assert response.status_code == 202
    sealed = await db.fetchval("SELECT text_body FROM mail_outbox")
    from tokenrota_server.outbox import Sealer

    text = Sealer(quiet_settings).open(sealed)
    assert text is not None
    assert f"{quiet_settings.reset_page_url}&token={token}" in text
    assert "evil.example" not in text


@pytest.mark.parametrize("email", HOSTILE_EMAILS, ids=range(len(HOSTILE_EMAILS)))
async def test_forgot_refuses_hostile_emails_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, email: str
) -> None:
    """SQL, NUL, CR/LF (a header injection), non-ASCII, too long: 422, nothing queued."""
    response = await post_json(client, "/password/forgot", {"email": email})

    assert_error(response, 422, "invalid_input")
    assert await rows(db) == {"account_tokens": [], "mail_outbox": []}
    assert await db.fetchval("SELECT count(*) FROM login_attempts") == 0


# -- the four endpoints' bodies -------------------------------------------------------------

ENDPOINTS = {
    "/password/forgot": {"email": "ada@example.com"},
    "/password/reset": {"token": "A" * 43, "new_password": NEW_PASSWORD},
    "/email/verify": {"token": "A" * 43},
}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"\xff\xfe", "application/json", 400, "invalid_request"),
        (b"[]", "application/json", 400, "invalid_request"),
        (b"null", "application/json", 400, "invalid_request"),
        (b'{"a": NaN}', "application/json", 400, "invalid_request"),
        (b'{"email": "a@b.c", "email": "d@e.f"}', "application/json", 400, "invalid_request"),
        (b"email=a@b.c", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"email": "a@b.c"}', "text/plain", 415, "unsupported_media_type"),
        (b"{}", "application/json", 422, "invalid_input"),
        (b"x" * 70_000, "application/json", 413, "payload_too_large"),
    ],
)
async def test_malformed_bodies_are_refused_and_nothing_is_written(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    table_snapshot: TableSnapshot,
    path: str,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    before, outbox = await table_snapshot(db), await rows(db)

    response = await client.post(path, content=content, headers={"content-type": content_type})

    assert_error(response, status, code)
    assert await table_snapshot(db) == before
    assert await rows(db) == outbox


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "change",
    [
        {"extra": "field"},
        {"email": 1, "token": 1, "new_password": 1},
        {"email": None, "token": None, "new_password": None},
        {"email": ["a@b.c"], "token": ["x"], "new_password": ["x"]},
    ],
    ids=["extra field", "numbers", "nulls", "lists"],
)
async def test_wrong_fields_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, path: str, change: dict[str, Any]
) -> None:
    body = {**ENDPOINTS[path], **{k: v for k, v in change.items() if k in ENDPOINTS[path]}}
    if "extra" in change:
        body["extra"] = change["extra"]

    response = await client.post(path, json=body)

    assert_error(response, 422, "invalid_input")
    assert await rows(db) == {"account_tokens": [], "mail_outbox": []}


BAD_TOKENS = {
    "empty": "",
    "short": "A" * 42,
    "long": "A" * 44,
    "padded": "A" * 43 + "=",
    "10 KB": "A" * 10_240,
    "non-ASCII": "Ä" * 43,
    "base64 with + and /": "+/" + "A" * 41,
    "NUL": "\x00" * 43,
    "SQL": "' OR '1'='1' --" + "A" * 28,
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
@pytest.mark.parametrize("path", ["/password/reset", "/email/verify"])
async def test_malformed_tokens_are_400_invalid_token_and_nothing_is_written(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    quiet_settings: Settings,
    table_snapshot: TableSnapshot,
    path: str,
    token: str,
) -> None:
    user = await register(client)
    real = await reset_token(client, db, quiet_settings, user["email"])
    before, tokens = await table_snapshot(db), await rows(db)

    response = await post_json(client, path, {**ENDPOINTS[path], "token": token})

    body = assert_error(response, 400, "invalid_token", secrets=(real,))
    assert "www-authenticate" not in response.headers
    assert body["error_description"]
    assert await table_snapshot(db) == before
    assert await rows(db) == tokens


@pytest.mark.parametrize("password", ["", "short", "x" * 129, "x" * 60_000])
async def test_a_weak_new_password_is_422_and_the_token_stays_usable(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings, password: str
) -> None:
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])

    refused = await reset(client, token, password)
    accepted = await reset(client, token)

    assert_error(refused, 422, "weak_password")
    assert accepted.status_code == 204


# -- reset ----------------------------------------------------------------------------------


async def test_a_reset_changes_the_password_and_ends_every_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    quiet_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both sessions die (their refresh tokens 403, their access tokens too); the old password
    fails, the new one works; the security log says so without the token."""
    user = await register(client)
    first, second = await login(client, user["email"]), await login(client, user["email"])
    token = await reset_token(client, db, quiet_settings, user["email"])
    caplog.set_level(logging.INFO, logger="tokenrota.security")

    response = await reset(client, token)

    assert response.status_code == 204
    for pair in (first, second):
        refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        assert_error(refreshed, 403, "invalid_token")
        assert (await client.get("/profile", headers=bearer(pair))).status_code == 403
    reasons = await db.fetch("SELECT DISTINCT revoke_reason FROM sessions")
    assert [row["revoke_reason"] for row in reasons] == ["password_reset"]
    old = await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    assert_error(old, 401, "invalid_credentials")
    assert (await login(client, user["email"], NEW_PASSWORD))["access_token"]
    logged = [r for r in caplog.records if r.name == "tokenrota.security"]
    assert any("password reset" in r.getMessage() for r in logged)
    assert all(token not in r.getMessage() and token not in str(r.__dict__) for r in logged)


async def test_a_token_works_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])

    first = await reset(client, token)
    second = await reset(client, token, "yet another passphrase")

    assert first.status_code == 204
    assert_error(second, 400, "invalid_token")
    assert (await login(client, user["email"], NEW_PASSWORD))["access_token"]


async def test_concurrent_resets_with_one_token_give_exactly_one_204(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    """Eight at once over real connections: one password wins, seven get 400."""
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])
    passwords = [f"racing passphrase {n}" for n in range(8)]

    answers = await asyncio.gather(*(reset(client, token, p) for p in passwords))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [204] + [400] * 7
    winner = passwords[[a.status_code for a in answers].index(204)]
    assert (await login(client, user["email"], winner))["access_token"]
    assert await db.fetchval("SELECT count(*) FROM account_tokens WHERE used_at IS NOT NULL") == 1
    # The audit log has the one reset that committed, by the user's id (never the email).
    audited = await db.fetch(
        "SELECT actor, target FROM audit_events WHERE action = 'password_reset'"
    )
    assert [tuple(row) for row in audited] == [(f"user:{user['id']}", user["id"])]


async def test_an_expired_token_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings, clock: FakeClock
) -> None:
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])

    clock.advance(quiet_settings.password_reset_ttl)
    response = await reset(client, token)

    assert_error(response, 400, "invalid_token")


async def test_a_newer_request_supersedes_the_older_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    user = await register(client)
    older = await reset_token(client, db, quiet_settings, user["email"])
    newer = await reset_token(client, db, quiet_settings, user["email"])

    assert_error(await reset(client, older), 400, "invalid_token")
    assert (await reset(client, newer)).status_code == 204


async def test_a_password_change_supersedes_reset_tokens(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    """A link sent before the change cannot undo it."""
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])
    pair = await login(client, user["email"])

    changed = await client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "changed passphrase"},
        headers=bearer(pair),
    )

    assert changed.status_code == 204
    assert_error(await reset(client, token), 400, "invalid_token")


async def test_a_reset_supersedes_the_users_other_reset_tokens(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    """Even one that slipped past supersession (written here by hand) is closed by a reset."""
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])
    await db.execute(
        "INSERT INTO account_tokens (token_digest, purpose, user_id, created_at, expires_at)"
        " VALUES ($1, 'password_reset', $2, now(), now() + interval '1 hour')",
        b"\x01" * 32,
        user["id"],
    )

    assert (await reset(client, token)).status_code == 204

    open_tokens = await db.fetchval(
        "SELECT count(*) FROM account_tokens WHERE used_at IS NULL AND superseded_at IS NULL"
    )
    assert open_tokens == 0


async def test_a_verification_token_is_no_reset_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    await client.post("/email/verification", headers=bearer(pair))
    token = await queued_token(db, quiet_settings, user["email"])

    assert_error(await reset(client, token), 400, "invalid_token")
    assert (await client.post("/email/verify", json={"token": token})).status_code == 204


async def test_a_reset_of_a_disabled_user_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])
    await db.execute("UPDATE users SET disabled_at = now()")

    assert_error(await reset(client, token), 400, "invalid_token")


# -- throttles ------------------------------------------------------------------------------


async def test_forgot_is_throttled_per_email_known_or_not(
    quiet_settings: Settings, clock: FakeClock
) -> None:
    """The 4th request for one email in a window is 429 with Retry-After, alike for an email
    without an account; another email is still served; the next window serves again."""
    settings = replace(quiet_settings, password_forgot_email_max_attempts=3)
    async with serve(settings, clock) as client:
        user = await register(client)
        for email in (user["email"], UNKNOWN):
            statuses = [(await forgot(client, email)).status_code for _ in range(3)]
            fourth = await forgot(client, email.upper())
            assert statuses == [202, 202, 202]
            assert_error(fourth, 429, "too_many_attempts")
            assert 0 < int(fourth.headers["retry-after"]) <= settings.login_throttle_window
        assert (await forgot(client, "someone-else@example.com")).status_code == 202
        clock.advance(settings.login_throttle_window)
        assert (await forgot(client, user["email"])).status_code == 202


async def test_forgot_counts_one_mailbox_however_its_domain_is_spelt(
    quiet_settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """The per-email throttle keys on the normalised mailbox: the domain in capitals, in
    Unicode and as A-labels are one key, whose 4th request is 429."""
    settings = replace(quiet_settings, password_forgot_email_max_attempts=3)
    async with serve(settings, clock) as client:
        await register(client, email="ann@xn--bcher-kva.example")
        spellings = [
            "ann@bücher.example",
            "ann@BÜCHER.EXAMPLE",
            "ann@xn--bcher-kva.example",
            "ann@Bücher.Example",
        ]
        answers = [await forgot(client, email) for email in spellings]

    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 3
    assert (
        await db.fetchval("SELECT count(*) FROM login_attempts WHERE scope = 'forgot_email'") == 1
    )


async def test_forgot_is_throttled_per_address(quiet_settings: Settings, clock: FakeClock) -> None:
    settings = replace(quiet_settings, password_forgot_ip_max_attempts=5)
    async with serve(settings, clock) as client:
        statuses = [(await forgot(client, f"u{n}@example.com")).status_code for n in range(6)]

    assert statuses == [202] * 5 + [429]


async def test_concurrent_forgot_requests_are_all_counted(
    quiet_settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Ten at once for one email, limit 3: exactly three messages."""
    settings = replace(quiet_settings, password_forgot_email_max_attempts=3)
    async with serve(settings, clock) as client:
        user = await register(client)
        answers = await asyncio.gather(*(forgot(client, user["email"]) for _ in range(10)))

    assert sorted(a.status_code for a in answers) == [202] * 3 + [429] * 7
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 3


# -- email verification ---------------------------------------------------------------------


async def test_verification_flow(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    """Not verified at first; 202 and a message; the link verifies once; then 409."""
    user = await register(client)
    pair = await login(client, user["email"])
    assert user["email_verified"] is False

    asked = await client.post("/email/verification", headers=bearer(pair))
    token = await queued_token(db, quiet_settings, user["email"])
    verified = await client.post("/email/verify", json={"token": token})
    again = await client.post("/email/verify", json={"token": token})
    asked_again = await client.post("/email/verification", headers=bearer(pair))
    profile = await client.get("/profile", headers=bearer(pair))

    assert (asked.status_code, asked.json()) == (202, {})
    assert verified.status_code == 204
    assert_error(again, 400, "invalid_token")
    assert_error(asked_again, 409, "already_verified")
    assert profile.json()["user"]["email_verified"] is True


async def test_verification_needs_a_live_session(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/email/verification"), 401, "missing_token")
    bad = await client.post("/email/verification", headers={"Authorization": "Bearer x.y.z"})
    assert_error(bad, 403, "invalid_token")


async def test_an_expired_verification_token_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings, clock: FakeClock
) -> None:
    user = await register(client)
    await client.post("/email/verification", headers=bearer(await login(client, user["email"])))
    token = await queued_token(db, quiet_settings, user["email"])

    clock.advance(quiet_settings.email_verification_ttl)

    assert_error(await client.post("/email/verify", json={"token": token}), 400, "invalid_token")


async def test_a_reset_verifies_the_email(
    client: httpx.AsyncClient, db: asyncpg.Connection, quiet_settings: Settings
) -> None:
    """The reset link came through the mailbox: that proves the address too."""
    user = await register(client)
    token = await reset_token(client, db, quiet_settings, user["email"])

    await reset(client, token)

    pair = await login(client, user["email"], NEW_PASSWORD)
    profile = await client.get("/profile", headers=bearer(pair))
    assert profile.json()["user"]["email_verified"] is True


async def test_required_verification_refuses_login_only_after_the_password(
    quiet_settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """REQUIRE_VERIFIED_EMAIL: register queues the message; a wrong password is still 401;
    the right one 403 email_unverified until the link is followed; then 200."""
    settings = replace(quiet_settings, require_verified_email=True)
    async with serve(settings, clock) as client:
        user = await register(client)
        token = await queued_token(db, settings, user["email"])
        credentials = {"email": user["email"], "password": PASSWORD}

        wrong = await client.post("/login", json={**credentials, "password": "wrong password"})
        unverified = await client.post("/login", json=credentials)
        verified = await client.post("/email/verify", json={"token": token})
        accepted = await client.post("/login", json=credentials)

    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unverified, 403, "email_unverified")
    assert verified.status_code == 204
    assert accepted.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1


async def test_verification_requests_count_with_reset_requests(
    quiet_settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Each sends a message to the same mailbox: two resets and one verification fill the limit
    of 3; the next verification request is 429 and sends nothing."""
    settings = replace(quiet_settings, password_forgot_email_max_attempts=3)
    async with serve(settings, clock) as client:
        user = await register(client)
        pair = await login(client, user["email"])
        await forgot(client, user["email"])
        await forgot(client, user["email"])
        third = await client.post("/email/verification", headers=bearer(pair))
        fourth = await client.post("/email/verification", headers=bearer(pair))

    assert third.status_code == 202
    assert_error(fourth, 429, "too_many_attempts")
    assert int(fourth.headers["retry-after"]) > 0
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 3
