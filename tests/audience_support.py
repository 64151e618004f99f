"""Helpers for the audience and token-exchange tests: resources registered through the admin
API, clients' grants to them, and the exchange request."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
from tokenrota_server.db.resources import GrantKind

from tests.oauth_support import basic

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


async def create_resource(
    client: httpx.AsyncClient, admin: dict[str, str], uri: str, *scopes: str, **extra: Any
) -> dict[str, Any]:
    """Register a resource through the admin API; return it."""
    response = await client.post(
        "/admin/resources",
        json={"uri": uri, "name": uri.rpartition("/")[2] or uri, "scopes": list(scopes), **extra},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def grant(
    db: asyncpg.Connection, client_id: str, uri: str, kind: GrantKind, *scopes: str
) -> None:
    """Grant a client a kind of use of a resource, straight in the database (as the CLI would)."""
    await db.execute(
        "INSERT INTO client_resources (client_id, resource_id, kind, scopes)"
        " SELECT $1, id, $3, $4 FROM resources WHERE uri = $2",
        client_id,
        uri,
        kind.value,
        list(scopes),
    )


async def exchange(
    client: httpx.AsyncClient,
    client_id: str,
    secret: str,
    subject_token: str,
    resource: str | None,
    **form: str,
) -> httpx.Response:
    """POST /oauth/token with the token-exchange grant and Basic auth."""
    data = {
        "grant_type": EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **form,
    }
    if resource is not None:
        data["resource"] = resource
    return await client.post("/oauth/token", data=data, headers=basic(client_id, secret))
