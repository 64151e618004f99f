"""Managing second factors: enrolling TOTP, its first code, recovery codes, removal, and the
recent-login rule that guards all of them."""

from __future__ import annotations

import base64
import logging

import asyncpg
import httpx
import pytest
from tokenrota_server import totp

from tests.checks import assert_error
from tests.mfa_support import bearer, enrol_totp, mfa_login, start_login, totp_user
from tests.support import FakeClock, login, register


async def test_enrolment_answers_the_secret_its_uri_and_a_qr_code(
    client: httpx.AsyncClient,
) -> None:
    """201 with the secret (base32, 160 bits), an otpauth://totp URI naming it, and an SVG."""
    user = await register(client)
    pair = await login(client, user["email"])

    response = await client.post("/mfa/totp", json={"name": "Phone"}, headers=bearer(pair))

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"factor_id", "secret", "otpauth_uri", "qr_svg"}
    assert len(body["secret"]) == 32
    assert body["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={body['secret']}" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg")
    assert response.headers["cache-control"] == "no-store"
    listed = await client.get("/mfa/factors", headers=bearer(pair))
    assert listed.json() == {"factors": []}, "not live before its first code"


@pytest.mark.parametrize("name", ["", "x" * 65, "tab\there", 7])
async def test_a_bad_factor_name_is_refused(client: httpx.AsyncClient, name: object) -> None:
    user = await register(client)
    pair = await login(client, user["email"])

    response = await client.post("/mfa/totp", json={"name": name}, headers=bearer(pair))

    assert_error(response, 422, "invalid_input")


async def test_the_first_code_makes_it_live_with_ten_recovery_codes(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Codes come with the first factor only, and are stored as digests, not as typed."""
    user = await register(client)
    pair = await login(client, user["email"])

    factor_id, _, codes = await enrol_totp(client, clock, pair, name="Phone")

    assert codes is not None
    assert len(codes) == len(set(codes)) == 10
    listed = (await client.get("/mfa/factors", headers=bearer(pair))).json()["factors"]
    assert [(f["id"], f["type"], f["name"]) for f in listed] == [(factor_id, "totp", "Phone")]
    stored = await db.fetch("SELECT code_digest FROM mfa_recovery_codes")
    assert len(stored) == 10
    assert all(code.replace("-", "").encode() not in row[0] for row in stored for code in codes)


async def test_a_wrong_first_code_leaves_it_pending(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    started = (await client.post("/mfa/totp", json={}, headers=bearer(pair))).json()
    wrong = totp.code_at(started["secret"], totp.step_of(clock.now) + 3)

    response = await client.post(
        f"/mfa/totp/{started['factor_id']}/verify", json={"code": wrong}, headers=bearer(pair)
    )

    assert_error(response, 401, "invalid_code")
    assert (await client.get("/mfa/factors", headers=bearer(pair))).json() == {"factors": []}


async def test_the_totp_secret_is_encrypted_at_rest(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Neither the base32 secret nor its bytes are in the row."""
    who = await totp_user(client, clock)

    sealed = await db.fetchval("SELECT secret_ciphertext FROM mfa_factors")

    assert who.secret.encode() not in sealed
    assert base64.b32decode(who.secret) not in sealed


async def test_enrolling_needs_a_recent_login(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Past MFA_MANAGE_MAX_AGE: 401 insufficient_user_authentication with RFC 9470's
    challenge, and nothing written."""
    user = await register(client)
    pair = await login(client, user["email"])
    clock.advance(301)

    response = await client.post("/mfa/totp", json={}, headers=bearer(pair))

    assert_error(response, 401, "insufficient_user_authentication")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_user_authentication"')
    assert "max_age=300" in challenge
    assert await db.fetchval("SELECT count(*) FROM mfa_factors") == 0


async def test_once_a_factor_exists_managing_needs_aal2(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """A fresh password-only token (the owner's session before the factor) may no longer
    enrol, remove a factor, or ask for recovery codes."""
    user = await register(client)
    enrolling = await login(client, user["email"])
    factor_id, _, _ = await enrol_totp(client, clock, enrolling)
    # A new password-only session cannot be had any more (mfa_required), so use the old one,
    # whose token is recent but aal1.
    before = await db.fetch("SELECT * FROM mfa_factors ORDER BY id")

    responses = [
        await client.post("/mfa/totp", json={}, headers=bearer(enrolling)),
        await client.delete(f"/mfa/factors/{factor_id}", headers=bearer(enrolling)),
        await client.post("/mfa/recovery-codes", headers=bearer(enrolling)),
    ]

    for response in responses:
        assert_error(response, 401, "insufficient_user_authentication")
        assert 'acr_values="aal2"' in response.headers["www-authenticate"]
    assert await db.fetch("SELECT * FROM mfa_factors ORDER BY id") == before


async def test_an_aal2_login_removes_a_factor_and_the_codes_with_the_last(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    who = await totp_user(client, clock)
    pair = await mfa_login(client, clock, who)

    removed = await client.delete(f"/mfa/factors/{who.factor_id}", headers=bearer(pair))

    assert removed.status_code == 204
    assert await db.fetchval("SELECT count(*) FROM mfa_recovery_codes") == 0
    assert (
        await client.post("/login", json={"email": who.email, "password": "correct horse battery"})
    ).status_code == 200
    actions = await db.fetch("SELECT action FROM audit_events ORDER BY id")
    assert "mfa_factor_removed" in [row["action"] for row in actions]


async def test_another_users_factor_is_not_found(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    owner = await totp_user(client, clock)
    other = await totp_user(client, clock)
    pair = await mfa_login(client, clock, other)

    for path in (f"/mfa/factors/{owner.factor_id}", "/mfa/factors/not-a-uuid"):
        assert_error(await client.delete(path, headers=bearer(pair)), 404, "not_found")
    assert await db.fetchval("SELECT count(*) FROM mfa_factors") == 2


async def test_new_recovery_codes_kill_the_old_set(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    who = await totp_user(client, clock)
    pair = await mfa_login(client, clock, who)

    fresh = await client.post("/mfa/recovery-codes", headers=bearer(pair))

    assert fresh.status_code == 200
    new_codes = fresh.json()["recovery_codes"]
    assert len(new_codes) == 10
    assert not set(new_codes) & set(who.recovery_codes)
    old = await start_login(client, who.email)
    refused = await client.post(
        "/login/mfa", json={"mfa_token": old["mfa_token"], "recovery_code": who.recovery_codes[1]}
    )
    assert_error(refused, 401, "invalid_code")
    new = await start_login(client, who.email)
    accepted = await client.post(
        "/login/mfa", json={"mfa_token": new["mfa_token"], "recovery_code": new_codes[0]}
    )
    assert accepted.status_code == 200


async def test_secrets_and_codes_reach_neither_logs_nor_audit_rows(
    client: httpx.AsyncClient,
    clock: FakeClock,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Enrolment, a login with a code, one with a recovery code, a wrong code: no secret,
    code or mfa_token in any log record or audit row."""
    caplog.set_level(logging.DEBUG)
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)
    code = who.code(clock)
    await client.post("/login/mfa", json={"mfa_token": started["mfa_token"], "code": "000000"})
    await client.post("/login/mfa", json={"mfa_token": started["mfa_token"], "code": code})
    again = await start_login(client, who.email)
    await client.post(
        "/login/mfa",
        json={"mfa_token": again["mfa_token"], "recovery_code": who.recovery_codes[0]},
    )

    logged = caplog.text + " ".join(str(vars(record)) for record in caplog.records)
    audited = str([tuple(row) for row in await db.fetch("SELECT * FROM audit_events")])
    for secret in (who.secret, code, started["mfa_token"], who.recovery_codes[0]):
        assert secret not in logged
        assert secret not in audited
    actions = [row["action"] for row in await db.fetch("SELECT action FROM audit_events")]
    assert {
        "mfa_factor_enrolled",
        "mfa_recovery_codes_issued",
        "mfa_failed",
        "mfa_succeeded",
    } <= set(actions)
