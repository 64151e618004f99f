"""Token exchange (RFC 8693) at /oauth/token: a resource server trades a user's token for itself
for one toward a downstream resource it was granted; every widening is refused."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota.dpop import thumbprint
from tokenrota_server.config import Settings
from tokenrota_server.db.resources import GrantKind

from tests.admin_support import admin_client
from tests.audience_support import ACCESS_TOKEN_TYPE, EXCHANGE, create_resource, exchange, grant
from tests.dpop_support import Signer, stamp
from tests.oauth_support import FEED_SCOPE, basic, claims_of, client_token, create_client
from tests.support import PASSWORD, FakeClock, TableSnapshot, register

ORDERS = "https://orders.example/"
BILLING = "https://billing.example/"
LEDGER = "https://ledger.example/"


class Chain:
    """A user logged in for ORDERS; the orders API's client (serves ORDERS, may exchange toward
    BILLING), the billing API's (serves BILLING, nothing more), each with its secret."""

    def __init__(self) -> None:
        self.user: dict[str, Any] = {}
        self.pair: dict[str, Any] = {}
        self.orders: tuple[str, str] = ("", "")
        self.billing: tuple[str, str] = ("", "")

    @property
    def token(self) -> str:
        token: str = self.pair["access_token"]
        return token


@pytest.fixture
async def chain(client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings) -> Chain:
    """The resources, the two resource servers' clients and grants, and a user's token for
    ORDERS."""
    _, admin = await admin_client(client, db, settings)
    await create_resource(client, admin, ORDERS, "shared:read", "orders:write")
    await create_resource(client, admin, BILLING, "shared:read", "billing:read")
    await create_resource(client, admin, LEDGER, "shared:read", access_token_ttl=60)
    found = Chain()
    found.orders = await create_client(db, settings, scope="", name="orders")
    found.billing = await create_client(db, settings, scope="", name="billing")
    await grant(db, found.orders[0], ORDERS, GrantKind.SERVES)
    await grant(db, found.orders[0], BILLING, GrantKind.EXCHANGE, "shared:read", "billing:read")
    await grant(db, found.billing[0], BILLING, GrantKind.SERVES)
    found.user = await register(client)
    await client.put(
        "/admin/roles/staff",
        json={"scopes": ["shared:read", "orders:write", "billing:read"]},
        headers=admin,
    )
    await client.put(
        f"/admin/users/{found.user['id']}/roles", json={"roles": ["staff"]}, headers=admin
    )
    response = await client.post(
        "/login", json={"email": found.user["email"], "password": PASSWORD, "resource": ORDERS}
    )
    assert response.status_code == 200, response.text
    found.pair = response.json()
    return found


async def test_an_exchange_keeps_the_user_and_session_and_names_the_actor(
    client: httpx.AsyncClient, chain: Chain, clock: FakeClock
) -> None:
    """aud = the downstream resource, the same sub and sid, act = the client, scopes the
    subject's that the resource defines (billing:read never was the subject's)."""
    response = await exchange(client, *chain.orders, chain.token, BILLING)

    body = response.json()
    claims, subject = claims_of(body["access_token"]), claims_of(chain.token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == claims["scope"] == "shared:read"
    assert claims["aud"] == BILLING
    assert (claims["sub"], claims["sid"]) == (subject["sub"], subject["sid"])
    assert claims["act"] == {"sub": chain.orders[0]}
    assert claims["exp"] <= subject["exp"]
    assert "refresh_token" not in body


async def test_the_token_never_outlives_its_subject_nor_the_resources_lifetime(
    client: httpx.AsyncClient, db: asyncpg.Connection, chain: Chain, clock: FakeClock
) -> None:
    """With 100 s left on the subject: 100 s; toward a 60 s resource: 60 s."""
    await grant(db, chain.orders[0], LEDGER, GrantKind.EXCHANGE, "shared:read")
    clock.advance(800)

    late = await exchange(client, *chain.orders, chain.token, BILLING)
    short = await exchange(client, *chain.orders, chain.token, LEDGER)

    assert late.json()["expires_in"] == 100
    assert claims_of(late.json()["access_token"])["exp"] == claims_of(chain.token)["exp"]
    assert short.json()["expires_in"] == 60


async def test_a_second_exchange_nests_the_actors(
    client: httpx.AsyncClient, db: asyncpg.Connection, chain: Chain
) -> None:
    """billing, granted LEDGER, exchanges the token it received: act names it, then orders."""
    await grant(db, chain.billing[0], LEDGER, GrantKind.EXCHANGE, "shared:read")
    for_billing = (await exchange(client, *chain.orders, chain.token, BILLING)).json()

    response = await exchange(client, *chain.billing, for_billing["access_token"], LEDGER)

    claims = claims_of(response.json()["access_token"])
    assert claims["aud"] == LEDGER
    assert claims["act"] == {"sub": chain.billing[0], "act": {"sub": chain.orders[0]}}


async def test_without_an_exchange_grant_the_next_hop_is_invalid_target(
    client: httpx.AsyncClient, chain: Chain
) -> None:
    """billing serves BILLING but was granted no exchange toward LEDGER (nor back to ORDERS)."""
    for_billing = (await exchange(client, *chain.orders, chain.token, BILLING)).json()

    onward = await exchange(client, *chain.billing, for_billing["access_token"], LEDGER)
    back = await exchange(client, *chain.billing, for_billing["access_token"], ORDERS)

    assert (onward.status_code, onward.json()["error"]) == (400, "invalid_target")
    assert (back.status_code, back.json()["error"]) == (400, "invalid_target")


async def test_a_wider_scope_is_invalid_scope(client: httpx.AsyncClient, chain: Chain) -> None:
    """A scope of the grant and the resource that the subject lacks; one the resource lacks."""
    not_the_subjects = await exchange(
        client, *chain.orders, chain.token, BILLING, scope="billing:read"
    )
    not_the_resources = await exchange(
        client, *chain.orders, chain.token, BILLING, scope="orders:write"
    )
    narrower = await exchange(client, *chain.orders, chain.token, BILLING, scope="shared:read")

    assert not_the_subjects.json()["error"] == "invalid_scope"
    assert not_the_resources.json()["error"] == "invalid_scope"
    assert narrower.status_code == 200


async def test_subject_tokens_that_are_not_a_live_users_token_for_the_caller_are_invalid_grant(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    chain: Chain,
    clock: FakeClock,
) -> None:
    """A refresh token, the service's own access token, a token for another API, a client's
    token for the caller's own API, another client's token, garbage: invalid_grant."""
    service_token = (
        await client.post("/login", json={"email": chain.user["email"], "password": PASSWORD})
    ).json()
    await grant(db, chain.orders[0], ORDERS, GrantKind.TOKEN)
    client_own = (await client_token(client, *chain.orders, resource=ORDERS)).json()
    for_billing = (await exchange(client, *chain.orders, chain.token, BILLING)).json()
    subjects = {
        "refresh token": chain.pair["refresh_token"],
        "the service's own token": service_token["access_token"],
        "a token for BILLING": for_billing["access_token"],
        "a client's token": client_own["access_token"],
        "garbage": "not.a.token",
    }

    answers = {
        name: await exchange(client, *chain.orders, subject, BILLING)
        for name, subject in subjects.items()
    }
    other_client = await exchange(client, *chain.billing, chain.token, BILLING)

    assert {name: (r.status_code, r.json()["error"]) for name, r in answers.items()} == {
        name: (400, "invalid_grant") for name in subjects
    }
    assert (other_client.status_code, other_client.json()["error"]) == (400, "invalid_grant")


async def test_an_expired_subject_token_is_invalid_grant(
    client: httpx.AsyncClient, chain: Chain, clock: FakeClock, settings: Settings
) -> None:
    """Past its exp (and the leeway): nothing is left to hand on."""
    clock.advance(900 + settings.jwt_leeway)

    response = await exchange(client, *chain.orders, chain.token, BILLING)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


async def test_a_revoked_sessions_token_is_invalid_grant(
    client: httpx.AsyncClient, chain: Chain
) -> None:
    """After logout the user's token for ORDERS is still signed and unexpired, but refused."""
    await client.post("/logout", json={"refresh_token": chain.pair["refresh_token"]})

    response = await exchange(client, *chain.orders, chain.token, BILLING)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


async def test_ending_the_session_ends_the_exchanged_token_through_the_feed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, chain: Chain
) -> None:
    """Logout: the feed names the exchanged token's sid, and introspection answers inactive."""
    exchanged = (await exchange(client, *chain.orders, chain.token, BILLING)).json()
    follower = await create_client(db, settings, scope=FEED_SCOPE)
    start = (await client.get("/oauth/revocations", headers=basic(*follower))).json()
    active = await client.post(
        "/oauth/introspect",
        data={"token": exchanged["access_token"]},
        headers=basic(*chain.billing),
    )

    await client.post("/logout", json={"refresh_token": chain.pair["refresh_token"]})
    feed = await client.get(
        "/oauth/revocations", params={"after": start["cursor"]}, headers=basic(*follower)
    )
    inactive = await client.post(
        "/oauth/introspect",
        data={"token": exchanged["access_token"]},
        headers=basic(*chain.billing),
    )

    sid = claims_of(exchanged["access_token"])["sid"]
    assert active.json()["active"] is True
    assert active.json()["aud"] == BILLING
    assert active.json()["act"] == {"sub": chain.orders[0]}
    assert [entry["sid"] for entry in feed.json()["sessions"]] == [sid]
    assert inactive.json() == {"active": False}


async def test_each_exchange_is_audited(
    client: httpx.AsyncClient, db: asyncpg.Connection, chain: Chain
) -> None:
    """One token_exchanged event: the acting client, the user, the session, the resources."""
    response = await exchange(client, *chain.orders, chain.token, BILLING)

    row = await db.fetchrow(
        "SELECT actor, user_id, details FROM audit_events WHERE action = 'token_exchanged'"
    )

    claims = claims_of(response.json()["access_token"])
    assert row is not None
    assert row["actor"] == f"client:{chain.orders[0]}"
    assert str(row["user_id"]) == chain.user["id"]
    assert json.loads(row["details"]) == {
        "session_id": claims["sid"],
        "subject_audience": ORDERS,
        "resource": BILLING,
        "scope": "shared:read",
        "jti": claims["jti"],
    }


async def test_a_refused_exchange_mints_and_records_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, chain: Chain, table_snapshot: TableSnapshot
) -> None:
    """An ungranted resource: no audit event, no rows."""
    before = await table_snapshot(db)

    response = await exchange(client, *chain.orders, chain.token, LEDGER)

    assert response.json()["error"] == "invalid_target"
    assert await table_snapshot(db) == before
    assert (
        await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'token_exchanged'") == 0
    )


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"resource": None}, "invalid_request"),
        ({"resource": "/relative"}, "invalid_target"),
        ({"resource": BILLING + "#x"}, "invalid_target"),
        ({"resource": "https://unknown.example/"}, "invalid_target"),
        (
            {"subject_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            "invalid_request",
        ),
        ({"subject_token_type": None}, "invalid_request"),
        ({"subject_token": None}, "invalid_request"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
        ({"actor_token": "x"}, "invalid_request"),
        ({"audience": "billing"}, "invalid_request"),
    ],
)
async def test_malformed_exchange_requests_are_refused(
    client: httpx.AsyncClient, chain: Chain, form: dict[str, Any], error: str
) -> None:
    """Missing or unsupported parameters: invalid_request; a bad resource: invalid_target."""
    data = {
        "grant_type": EXCHANGE,
        "subject_token": chain.token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": BILLING,
        **form,
    }

    response = await client.post(
        "/oauth/token",
        data={name: value for name, value in data.items() if value is not None},
        headers=basic(*chain.orders),
    )

    assert (response.status_code, response.json()["error"]) == (400, error)


async def test_an_exchange_needs_client_authentication(
    client: httpx.AsyncClient, chain: Chain
) -> None:
    """No credentials, or a wrong secret: 401 invalid_client."""
    anonymous = await client.post(
        "/oauth/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": chain.token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": BILLING,
        },
    )
    wrong = await exchange(client, chain.orders[0], "wrong-secret", chain.token, BILLING)

    assert (anonymous.status_code, wrong.status_code) == (401, 401)


async def test_a_dpop_proof_binds_the_exchanged_token_to_the_callers_key(
    client: httpx.AsyncClient, chain: Chain, settings: Settings, clock: FakeClock
) -> None:
    """As the other grants: cnf.jkt of the caller's key, token_type DPoP."""
    holder = Signer("ES256")
    proof = holder.proof(htu=f"{settings.public_base_url}/oauth/token", iat=stamp(clock.now))

    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": chain.token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": BILLING,
        },
        headers={**basic(*chain.orders), "DPoP": proof},
    )

    assert response.json()["token_type"] == "DPoP"
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": thumbprint(holder.jwk)}


async def test_the_metadata_lists_the_exchange_grant(client: httpx.AsyncClient) -> None:
    """RFC 8414: grant_types_supported names token exchange."""
    response = await client.get("/.well-known/oauth-authorization-server")

    assert EXCHANGE in response.json()["grant_types_supported"]
