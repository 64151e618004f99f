"""Operators acting on accounts by mail: creating and inviting users, sending a reset or a
verification link. Messages go through the real SMTP server the mail tests use (aiosmtpd),
sent by one explicit drainer round, so no test waits on a timer."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings, load_settings
from tokenrota_server.errors import ConfigError

from tests.admin_support import admin_client, bearer
from tests.db.test_outbox import deliver, smtp_settings
from tests.http.test_login import HOSTILE_EMAILS
from tests.mail_support import SmtpServer, parts_of, token_in
from tests.support import PASSWORD, FakeClock, login, register, serve

NEW_PASSWORD = "a brand new passphrase"
SOME_ID = "4d6f2a90-3b1e-4c57-9a8d-0e2f6b7c1a35"
INVITE_PAGE = "https://app.example/welcome"
ENDPOINTS: list[tuple[str, dict[str, Any] | None]] = [
    ("/admin/users", {"email": "new@example.com", "invite": True}),
    (f"/admin/users/{SOME_ID}/password-reset", None),
    (f"/admin/users/{SOME_ID}/verification", None),
]


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    """Sending to the test SMTP server when a test runs `deliver`; invitations link to
    INVITE_PAGE."""
    return replace(smtp_settings(settings, smtp_server), invitation_url=INVITE_PAGE)


@pytest.fixture
async def client(mail_settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(mail_settings, clock) as client:
        yield client


async def everything(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row an account call could write."""
    snapshot = {}
    for table in ("users", "user_roles", "account_tokens", "mail_outbox", "audit_events"):
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
        snapshot[table] = [tuple(row) for row in rows]
    return snapshot


async def actions(db: asyncpg.Connection) -> list[str]:
    return [row["action"] for row in await db.fetch("SELECT action FROM audit_events ORDER BY id")]


def test_the_route_list_covers_every_route() -> None:
    from tokenrota_server.http import admin_accounts

    served = {route.path for route in admin_accounts.routes}

    assert served == {path.replace(SOME_ID, "{user_id}") for path, _ in ENDPOINTS}


@pytest.mark.parametrize(("path", "body"), ENDPOINTS, ids=[path for path, _ in ENDPOINTS])
async def test_every_endpoint_refuses_every_caller_but_an_admin_client(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    _, reader = await admin_client(client, db, settings, scope="read")
    before = await everything(db)

    anonymous = await client.post(path, json=body)
    as_user = await client.post(path, json=body, headers=bearer(pair))
    as_reader = await client.post(path, json=body, headers=reader)

    assert anonymous.status_code == 401
    assert [as_user.status_code, as_reader.status_code] == [403, 403]
    assert await everything(db) == before


async def test_an_invited_user_chooses_a_password_by_the_mailed_link(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    """The link sets the password and verifies the email, once; before it, no password works."""
    _, admin = await admin_client(client, db, mail_settings)
    await client.put("/admin/roles/support", json={"scopes": ["tickets"]}, headers=admin)

    created = await client.post(
        "/admin/users",
        json={"email": "Ada@Example.com", "invite": True, "roles": ["support"]},
        headers=admin,
    )
    before_choosing = await client.post(
        "/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    sent = await deliver(mail_settings, clock)

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "Ada@example.com"
    assert body["roles"] == ["support"]
    assert body["email_verified"] is False
    assert before_choosing.status_code == 401
    assert sent == 1
    [message] = smtp_server.inbox.messages
    assert smtp_server.inbox.envelopes == [["Ada@example.com"]]
    assert message["Subject"] == "You are invited: choose your password"
    text, _ = parts_of(message)
    token = token_in(text)
    assert f"{INVITE_PAGE}?token={token}" in text
    assert token not in str(await everything(db))
    chosen = await client.post(
        "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    again = await client.post(
        "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert (chosen.status_code, again.status_code) == (204, 400)
    pair = await login(client, "ada@example.com", NEW_PASSWORD)
    profile = await client.get("/profile", headers=bearer(pair))
    assert profile.json()["user"]["email_verified"] is True
    assert await actions(db) == [
        "role_put",
        "user_created",
        "user_invited",
        "invitation_accepted",
    ]


async def test_an_invitation_has_its_own_lifetime_and_purpose(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    """It outlives a reset token's 30 minutes, ends at INVITATION_TTL, and verifies no email at
    /email/verify."""
    _, admin = await admin_client(client, db, mail_settings)
    for email in ("early@example.com", "late@example.com"):
        await client.post("/admin/users", json={"email": email, "invite": True}, headers=admin)
    await deliver(mail_settings, clock)
    early, late = (token_in(parts_of(message)[0]) for message in smtp_server.inbox.messages)

    wrong_purpose = await client.post("/email/verify", json={"token": early})
    clock.advance(mail_settings.password_reset_ttl + 60)
    within = await client.post(
        "/password/reset", json={"token": early, "new_password": NEW_PASSWORD}
    )
    clock.advance(mail_settings.invitation_ttl)
    expired = await client.post(
        "/password/reset", json={"token": late, "new_password": NEW_PASSWORD}
    )

    assert wrong_purpose.status_code == 400
    assert within.status_code == 204
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_token"


async def test_a_user_created_without_invitation_gets_no_mail(
    client: httpx.AsyncClient, db: asyncpg.Connection, mail_settings: Settings
) -> None:
    _, admin = await admin_client(client, db, mail_settings)

    created = await client.post("/admin/users", json={"email": "quiet@example.com"}, headers=admin)
    taken = await client.post("/admin/users", json={"email": "QUIET@example.com"}, headers=admin)

    assert created.status_code == 201
    assert taken.status_code == 409
    assert taken.json()["error"] == "email_taken"
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 0
    assert await actions(db) == ["user_created"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": 7},
        {"email": "a@example.com", "invite": "yes"},
        {"email": "a@example.com", "roles": ["nosuchrole"]},
        {"email": "a@example.com", "roles": "support"},
        {"email": "a@example.com", "password": "chosen by the operator"},
        *({"email": email, "invite": True} for email in HOSTILE_EMAILS),
    ],
)
async def test_bad_creations_are_422_and_write_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: dict[str, Any]
) -> None:
    _, admin = await admin_client(client, db, settings)
    before = await everything(db)

    # Non-ASCII escaped, so lone surrogates (`\ud800`) get through.
    response = await client.post(
        "/admin/users",
        content=json.dumps(body).encode("ascii"),
        headers={**admin, "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert await everything(db) == before


async def test_an_operator_sends_a_reset_and_a_verification_link(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    _, admin = await admin_client(client, db, mail_settings)
    user = await register(client)
    base = f"/admin/users/{user['id']}"

    reset = await client.post(f"{base}/password-reset", headers=admin)
    verification = await client.post(f"{base}/verification", headers=admin)
    await deliver(mail_settings, clock)

    assert (reset.status_code, verification.status_code) == (202, 202)
    subjects = [message["Subject"] for message in smtp_server.inbox.messages]
    assert sorted(subjects) == ["Reset your password", "Verify your email address"]
    tokens = {m["Subject"]: token_in(parts_of(m)[0]) for m in smtp_server.inbox.messages}
    verified = await client.post(
        "/email/verify", json={"token": tokens["Verify your email address"]}
    )
    reset_done = await client.post(
        "/password/reset",
        json={"token": tokens["Reset your password"], "new_password": NEW_PASSWORD},
    )
    assert (verified.status_code, reset_done.status_code) == (204, 204)
    again = await client.post(f"{base}/verification", headers=admin)
    assert again.status_code == 409
    assert again.json()["error"] == "already_verified"
    assert [a for a in await actions(db) if a.endswith("_sent")] == [
        "password_reset_sent",
        "verification_sent",
    ]


async def test_a_disabled_or_unknown_user_gets_no_link(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    user = await register(client)
    await client.post(f"/admin/users/{user['id']}/disable", headers=admin)
    before = await everything(db)

    disabled = await client.post(f"/admin/users/{user['id']}/password-reset", headers=admin)
    unknown = await client.post(f"/admin/users/{SOME_ID}/verification", headers=admin)
    malformed = await client.post("/admin/users/42/verification", headers=admin)

    assert disabled.status_code == 422
    assert (unknown.status_code, malformed.status_code) == (404, 404)
    assert await everything(db) == before


async def test_concurrent_creations_of_one_email_make_one_user(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Racing requests: exactly one 201, the others 409, one row and one event."""
    _, admin = await admin_client(client, db, settings)
    spellings = ["race@example.com", "RACE@example.com", "Race@Example.COM"] * 3

    responses = await asyncio.gather(
        *(
            client.post("/admin/users", json={"email": email, "invite": True}, headers=admin)
            for email in spellings
        )
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (len(spellings) - 1)
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT count(*) FROM account_tokens") == 1
    assert await actions(db) == ["user_created", "user_invited"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INVITATION_URL", "javascript:alert(1)"),
        ("INVITATION_URL", "https://app.example/welcome#fragment"),
        ("INVITATION_TTL", "0"),
        ("INVITATION_TTL", "-1"),
    ],
)
def test_invitation_settings_are_checked_at_start(variable: str, value: str) -> None:
    environment = {
        "ENV": "test",
        "ACCESS_TOKEN_SECRET": "a" + secrets.token_hex(32),
        "REFRESH_TOKEN_SECRET": "r" + secrets.token_hex(32),
    }
    assert (
        load_settings(environment).invitation_page_url == load_settings(environment).reset_page_url
    )

    with pytest.raises(ConfigError) as refused:
        load_settings({**environment, variable: value})

    assert str(refused.value).startswith(variable)
