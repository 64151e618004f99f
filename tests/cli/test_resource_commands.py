"""The resource CLI: create-resource, list-resources, grant-resource, list-client-resources,
revoke-resource, delete-resource; each change audited as `cli`."""

from __future__ import annotations

import json

import asyncpg
import httpx
from tokenrota.clock import utc_now
from tokenrota_server.config import Settings
from tokenrota_server.db import resources

from tests.cli.test_client_commands import cli
from tests.oauth_support import claims_of, client_token, create_client

ORDERS = "https://orders.example/api"


async def test_a_resource_is_registered_granted_used_and_removed_from_the_command_line(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The grant the CLI writes is the one /oauth/token honours; deleting takes it away."""
    client_id, secret = await create_client(db, settings, scope="")

    created = await cli(
        settings,
        "create-resource",
        ORDERS,
        "--name",
        "Orders",
        "--scope",
        "orders:read",
        "--ttl",
        "60",
    )
    granted = await cli(
        settings, "grant-resource", client_id, ORDERS, "--kind", "token", "--scope", "orders:read"
    )
    listed = await cli(settings, "list-resources")
    grants = await cli(settings, "list-client-resources", client_id)
    token = await client_token(client, client_id, secret, resource=ORDERS)
    revoked = await cli(settings, "revoke-resource", client_id, ORDERS, "--kind", "token")
    refused = await client_token(client, client_id, secret, resource=ORDERS)
    deleted = await cli(settings, "delete-resource", ORDERS)

    assert created[0] == 0, created
    assert json.loads(created[1])["access_token_ttl"] == 60
    assert granted[0] == 0, granted
    assert [json.loads(line)["uri"] for line in listed[1].splitlines()] == [ORDERS]
    assert json.loads(grants[1]) == {
        "client_id": client_id,
        "resource": ORDERS,
        "resource_id": json.loads(created[1])["id"],
        "kind": "token",
        "scopes": ["orders:read"],
    }
    claims = claims_of(token.json()["access_token"])
    assert (claims["aud"], claims["scope"], claims["exp"] - claims["iat"]) == (
        ORDERS,
        "orders:read",
        60,
    )
    assert revoked[0] == 0
    assert refused.json()["error"] == "invalid_target"
    assert deleted[0] == 0
    actions = await db.fetch("SELECT actor, action FROM audit_events ORDER BY id")
    assert [(row["actor"], row["action"]) for row in actions] == [
        ("cli", "resource_created"),
        ("cli", "client_resource_granted"),
        ("cli", "client_resource_revoked"),
        ("cli", "resource_deleted"),
    ]


async def test_bad_input_is_one_error_line_and_writes_nothing(
    db: asyncpg.Connection, settings: Settings
) -> None:
    """A fragment URI, an unknown resource or client, a scope the resource lacks: status 1."""
    client_id, _ = await create_client(db, settings, scope="")
    await resources.insert_resource(
        db, uri=ORDERS, name="Orders", scopes=("orders:read",), access_token_ttl=None, now=utc_now()
    )

    answers = [
        await cli(settings, "create-resource", ORDERS + "#x", "--name", "x"),
        await cli(
            settings, "grant-resource", client_id, "https://unknown.example", "--kind", "token"
        ),
        await cli(settings, "grant-resource", "0" * 32, ORDERS, "--kind", "token"),
        await cli(
            settings, "grant-resource", client_id, ORDERS, "--kind", "exchange", "--scope", "admin"
        ),
        await cli(settings, "delete-resource", "https://unknown.example"),
    ]

    for status, out, err in answers:
        assert (status, out) == (1, ""), err
        assert len(err.strip().splitlines()) == 1
        assert err.startswith("error: ")
    assert await db.fetchval("SELECT count(*) FROM client_resources") == 0
    assert await db.fetchval("SELECT count(*) FROM resources") == 1
