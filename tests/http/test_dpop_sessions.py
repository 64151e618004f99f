"""DPoP-bound sessions (RFC 9449 §5): a login with a proof binds every token of its session to the
key, and a refresh token is worth nothing without a proof by that key, even to a thief racing
its owner inside the grace window."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota.dpop import access_token_hash, thumbprint
from tokenrota_server.config import Settings

from tests.dpop_support import Signer, stamp
from tests.http.test_cookies import GOOD, SECURE_NAME, post_with_cookie, set_cookie
from tests.oauth_support import claims_of
from tests.support import PASSWORD, FakeClock, Register, Serve


@pytest.fixture(scope="module")
def owner() -> Signer:
    """The rightful client's key."""
    return Signer("ES256")


@pytest.fixture(scope="module")
def thief() -> Signer:
    """A key of the thief's own: it makes valid proofs, just not by the owner's key."""
    return Signer("ES256")


def proof(signer: Signer, settings: Settings, clock: FakeClock, path: str) -> str:
    """A fresh proof for POST `path` under the service's published URL, at the clock's time."""
    return signer.proof(htu=f"{settings.public_base_url}{path}", iat=stamp(clock.now))


async def bound_login(
    client: httpx.AsyncClient,
    email: str,
    signer: Signer,
    settings: Settings,
    clock: FakeClock,
    **body: Any,
) -> httpx.Response:
    return await client.post(
        "/login",
        json={"email": email, "password": PASSWORD, **body},
        headers={"DPoP": proof(signer, settings, clock, "/login")},
    )


async def refresh(client: httpx.AsyncClient, token: str, dpop: str | None = None) -> httpx.Response:
    headers = {"DPoP": dpop} if dpop is not None else {}
    return await client.post("/refresh", json={"refresh_token": token}, headers=headers)


async def audit_actions(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch("SELECT action FROM audit_events ORDER BY id")
    return [row["action"] for row in rows]


async def session_revoked(db: asyncpg.Connection) -> bool:
    reason: str | None = await db.fetchval("SELECT revoke_reason FROM sessions")
    return reason is not None


async def test_a_login_with_a_proof_binds_both_tokens(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """token_type DPoP; the access and the refresh token both name the key in cnf.jkt."""
    user = await register(client)

    response = await bound_login(client, user["email"], owner, settings, clock)

    pair = response.json()
    binding = {"jkt": thumbprint(owner.jwk)}
    assert response.status_code == 200
    assert pair["token_type"] == "DPoP"
    assert claims_of(pair["access_token"])["cnf"] == binding
    assert claims_of(pair["refresh_token"])["cnf"] == binding


async def test_a_bound_session_refreshes_with_its_keys_proof(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """Each refresh with a fresh proof by the key rotates, and the children stay bound."""
    user = await register(client)
    pair = (await bound_login(client, user["email"], owner, settings, clock)).json()

    for _ in range(3):
        clock.advance(1)
        response = await refresh(
            client, pair["refresh_token"], proof(owner, settings, clock, "/refresh")
        )
        assert response.status_code == 200, response.text
        pair = response.json()

    assert pair["token_type"] == "DPoP"
    assert claims_of(pair["access_token"])["cnf"] == {"jkt": thumbprint(owner.jwk)}
    assert claims_of(pair["refresh_token"])["cnf"] == {"jkt": thumbprint(owner.jwk)}


async def test_a_bound_refresh_token_without_a_proof_is_refused_and_audited(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """403, nothing spent (the owner still refreshes), and a dpop_proof_missing event."""
    user = await register(client)
    pair = (await bound_login(client, user["email"], owner, settings, clock)).json()

    copied = await refresh(client, pair["refresh_token"])
    clock.advance(1)
    rightful = await refresh(
        client, pair["refresh_token"], proof(owner, settings, clock, "/refresh")
    )

    assert (copied.status_code, copied.json()["error"]) == (403, "invalid_token")
    assert rightful.status_code == 200
    assert "dpop_proof_missing" in await audit_actions(db)


async def test_another_keys_proof_is_theft_and_ends_the_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
    thief: Signer,
) -> None:
    """A valid proof by a different key: 403, the session revoked, dpop_key_mismatch audited."""
    user = await register(client)
    pair = (await bound_login(client, user["email"], owner, settings, clock)).json()

    stolen = await refresh(client, pair["refresh_token"], proof(thief, settings, clock, "/refresh"))
    clock.advance(1)
    rightful = await refresh(
        client, pair["refresh_token"], proof(owner, settings, clock, "/refresh")
    )

    assert (stolen.status_code, stolen.json()["error"]) == (403, "invalid_token")
    assert rightful.status_code == 403
    assert await session_revoked(db)
    assert "dpop_key_mismatch" in await audit_actions(db)


async def test_a_thief_racing_the_owner_inside_the_grace_window_gets_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
    thief: Signer,
) -> None:
    """The owner rotates; within REFRESH_REUSE_INTERVAL the thief presents the same parent
    token with no proof, with the owner's copied proof, and with its own key: never the child."""
    user = await register(client)
    pair = (await bound_login(client, user["email"], owner, settings, clock)).json()
    clock.advance(1)
    owners_proof = proof(owner, settings, clock, "/refresh")
    child = (await refresh(client, pair["refresh_token"], owners_proof)).json()

    attempts = [
        await refresh(client, pair["refresh_token"]),
        await refresh(client, pair["refresh_token"], owners_proof),
        await refresh(client, pair["refresh_token"], proof(thief, settings, clock, "/refresh")),
    ]

    assert [attempt.status_code for attempt in attempts] == [403, 400, 403]
    assert attempts[1].json()["error"] == "invalid_dpop_proof"
    assert all(child["refresh_token"] not in attempt.text for attempt in attempts)
    assert await session_revoked(db)


async def test_the_owner_still_gets_its_grace_child_with_a_new_proof(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """Two tabs of the rightful client, each with its own proof: the same child, as before."""
    user = await register(client)
    pair = (await bound_login(client, user["email"], owner, settings, clock)).json()
    clock.advance(1)

    first = await refresh(client, pair["refresh_token"], proof(owner, settings, clock, "/refresh"))
    second = await refresh(client, pair["refresh_token"], proof(owner, settings, clock, "/refresh"))

    assert first.status_code == second.status_code == 200
    assert first.json()["refresh_token"] == second.json()["refresh_token"]


async def test_a_bad_proof_at_login_writes_nothing_whatever_the_password(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """400 invalid_dpop_proof for the right and the wrong password alike: no oracle, no session."""
    user = await register(client)
    bad = owner.proof(htu=f"{settings.public_base_url}/refresh", iat=stamp(clock.now))

    answers = [
        await client.post(
            "/login", json={"email": user["email"], "password": password}, headers={"DPoP": bad}
        )
        for password in (PASSWORD, "not the password")
    ]

    assert [(a.status_code, a.json()["error"]) for a in answers] == [
        (400, "invalid_dpop_proof")
    ] * 2
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    assert await db.fetchval("SELECT count(*) FROM dpop_proofs") == 0


async def test_a_replayed_login_proof_starts_no_second_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """The same proof twice: the second login is 400 and its session is rolled back."""
    user = await register(client)
    once = proof(owner, settings, clock, "/login")
    body = {"email": user["email"], "password": PASSWORD}

    first = await client.post("/login", json=body, headers={"DPoP": once})
    second = await client.post("/login", json=body, headers={"DPoP": once})

    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]) == (400, "invalid_dpop_proof")
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1


async def test_a_proof_for_an_unbound_session_is_ignored(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """A session started without a proof stays a Bearer session: binding is fixed at login."""
    user = await register(client)
    pair = (await client.post("/login", json={"email": user["email"], "password": PASSWORD})).json()
    clock.advance(1)

    response = await refresh(
        client, pair["refresh_token"], proof(owner, settings, clock, "/refresh")
    )

    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(response.json()["access_token"])


async def test_the_refresh_token_grant_checks_the_binding_too(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """At /oauth/token the proof names /oauth/token; without one the grant is invalid_grant."""
    user = await register(client)
    pair = (await bound_login(client, user["email"], owner, settings, clock)).json()
    form = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}

    missing = await client.post("/oauth/token", data=form)
    clock.advance(1)
    bound = await client.post(
        "/oauth/token", data=form, headers={"DPoP": proof(owner, settings, clock, "/oauth/token")}
    )

    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_grant")
    assert bound.status_code == 200
    assert bound.json()["token_type"] == "DPoP"


async def test_the_cookie_transport_needs_the_proof_too(
    make_settings: Any,
    clock: FakeClock,
    serve: Serve,
    register: Register,
    owner: Signer,
) -> None:
    """A bound session in a cookie: the cookie alone (copied out of the browser) is refused."""
    settings: Settings = make_settings(allowed_origins=(GOOD["Origin"],))
    async with serve(settings, clock) as browser:
        user = await register(browser)
        login = await bound_login(browser, user["email"], owner, settings, clock, use_cookie=True)
        _, cookie, _ = set_cookie(login)
        cookie_alone = await post_with_cookie(browser, "/refresh", cookie)
        clock.advance(1)
        with_proof = await post_with_cookie(
            browser,
            "/refresh",
            cookie,
            headers={**GOOD, "DPoP": proof(owner, settings, clock, "/refresh")},
        )

    assert login.json()["token_type"] == "DPoP"
    assert (cookie_alone.status_code, cookie_alone.json()["error"]) == (403, "invalid_token")
    assert with_proof.status_code == 200
    assert SECURE_NAME in with_proof.headers["set-cookie"]


def resource_proof(
    signer: Signer, settings: Settings, clock: FakeClock, method: str, path: str, access_token: str
) -> str:
    """A proof for a bearer route: this method and URL, and the access token's hash."""
    return signer.proof(
        htm=method,
        htu=f"{settings.public_base_url}{path}",
        iat=stamp(clock.now),
        ath=access_token_hash(access_token),
    )


async def test_the_services_own_routes_take_a_bound_token_only_with_its_proof(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
    thief: Signer,
) -> None:
    """/profile and /sessions: DPoP scheme and a proof by the key; as a bearer, 403; a replayed
    or foreign proof, 401 with the DPoP challenge."""
    user = await register(client)
    access = (await bound_login(client, user["email"], owner, settings, clock)).json()[
        "access_token"
    ]
    good = resource_proof(owner, settings, clock, "GET", "/profile", access)

    def dpop_headers(proof_value: str) -> dict[str, str]:
        return {"Authorization": f"DPoP {access}", "DPoP": proof_value}

    accepted = await client.get("/profile", headers=dpop_headers(good))
    replayed = await client.get("/profile", headers=dpop_headers(good))
    foreign = await client.get(
        "/profile",
        headers=dpop_headers(resource_proof(thief, settings, clock, "GET", "/profile", access)),
    )
    as_bearer = await client.get("/profile", headers={"Authorization": f"Bearer {access}"})
    sessions = await client.get(
        "/sessions",
        headers=dpop_headers(resource_proof(owner, settings, clock, "GET", "/sessions", access)),
    )
    wrong_route = await client.get(
        "/sessions",
        headers=dpop_headers(resource_proof(owner, settings, clock, "GET", "/profile", access)),
    )

    assert accepted.json()["user"]["email"] == user["email"]
    assert sessions.status_code == 200
    for refused in (replayed, foreign, wrong_route):
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_dpop_proof")
        assert refused.headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    assert (as_bearer.status_code, as_bearer.json()["error"]) == (403, "invalid_token")


async def test_an_unbound_token_under_the_dpop_scheme_is_refused_at_the_service(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> None:
    """A plain session's token sent as DPoP binds nothing: 403 invalid_token."""
    user = await register(client)
    access = (
        await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    ).json()["access_token"]

    response = await client.get(
        "/profile",
        headers={
            "Authorization": f"DPoP {access}",
            "DPoP": resource_proof(owner, settings, clock, "GET", "/profile", access),
        },
    )

    assert (response.status_code, response.json()["error"]) == (403, "invalid_token")


# Not a proof copied before its owner sent it: whoever holds an unused proof holds the key's
# consent for that one request (RFC 9449 §11.1); the sequential test covers a proof replayed.
@pytest.mark.parametrize("thiefs_proof", ["none", "own key"])
async def test_a_thief_truly_racing_the_owner_gets_nothing(
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    serve: Serve,
    register: Register,
    owner: Signer,
    thief: Signer,
    thiefs_proof: str,
) -> None:
    """Owner and thief present the same bound refresh token at once, on two instances
    (asyncio.gather, both in flight): whichever lands first, the thief's answer holds no token;
    a proof by the thief's own key ends the session either way."""
    async with serve(settings, clock) as at_owner, serve(settings, clock) as at_thief:
        user = await register(at_owner)
        pair = (await bound_login(at_owner, user["email"], owner, settings, clock)).json()
        clock.advance(1)
        owners_proof = proof(owner, settings, clock, "/refresh")
        stolen = None if thiefs_proof == "none" else proof(thief, settings, clock, "/refresh")

        owners, thiefs = await asyncio.gather(
            refresh(at_owner, pair["refresh_token"], owners_proof),
            refresh(at_thief, pair["refresh_token"], stolen),
        )

    assert thiefs.status_code == 403
    assert "refresh_token" not in thiefs.json()
    assert "access_token" not in thiefs.json()
    if thiefs_proof == "own key":
        assert await session_revoked(db)
    else:
        assert owners.status_code == 200
