"""The passkey endpoints at the HTTP edge: registering (bearer, one challenge per ceremony,
bad input written nowhere), and the request options."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests import support
from tests.passkey_support import SoftAuthenticator


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with the software authenticator's page as the passkey origin."""
    return replace(settings, webauthn_origins=("http://localhost:8000",))


async def bearer(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    user, pair = await support.register_and_login(client)
    return user, {"Authorization": f"Bearer {pair['access_token']}"}


async def creation_options(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/passkeys/register/options", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    options: dict[str, Any] = response.json()
    return options


async def passkey_rows(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT f.id, f.name, c.sign_count FROM mfa_factors f"
        " JOIN passkey_credentials c ON c.factor_id = f.id ORDER BY f.created_at"
    )
    return [tuple(row) for row in rows]


async def test_creation_options_name_the_rp_and_an_opaque_user_handle(
    client: httpx.AsyncClient,
) -> None:
    """The RP is WEBAUTHN_RP_ID; the user handle is the user's id, never the email; a resident
    key is required; the user's passkeys are excluded."""
    user, headers = await bearer(client)
    options = await creation_options(client, headers)
    authenticator = SoftAuthenticator()
    await client.post(
        "/passkeys/register", headers=headers, json={"credential": authenticator.create(options)}
    )

    again = await creation_options(client, headers)

    assert options["rp"]["id"] == "localhost"
    assert user["email"] not in options["user"]["id"]
    assert authenticator.user_handle is not None
    assert authenticator.user_handle.hex() == user["id"].replace("-", "")
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert [c["id"] for c in again["excludeCredentials"]] == [
        authenticator.get({"challenge": "", "rpId": "localhost"})["id"]
    ]


async def test_a_passkey_registers_once_under_its_name(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """201 with the factor; its creation response again (the challenge spent) is refused."""
    _, headers = await bearer(client)
    credential = SoftAuthenticator().create(await creation_options(client, headers))

    first = await client.post(
        "/passkeys/register", headers=headers, json={"credential": credential, "name": " laptop "}
    )
    replayed = await client.post(
        "/passkeys/register", headers=headers, json={"credential": credential, "name": "again"}
    )

    assert first.status_code == 201, first.text
    assert first.json()["factor"]["type"] == "passkey"
    assert first.json()["factor"]["name"] == "laptop"
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_passkey"
    assert [row[1] for row in await passkey_rows(db)] == ["laptop"]


async def test_a_challenge_issued_to_another_user_registers_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A creation response for Alice's challenge, sent with Bob's token, is refused."""
    _, alice = await bearer(client)
    _, bob = await bearer(client)
    credential = SoftAuthenticator().create(await creation_options(client, alice))

    response = await client.post("/passkeys/register", headers=bob, json={"credential": credential})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_passkey"
    assert await passkey_rows(db) == []


@pytest.mark.parametrize(
    ("forgery", "status"),
    [({"origin": "https://evil.example"}, 400), ({"rp_id": "evil.example"}, 400)],
)
async def test_a_creation_response_for_another_origin_or_rp_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, forgery: dict[str, str], status: int
) -> None:
    _, headers = await bearer(client)
    credential = SoftAuthenticator().create(await creation_options(client, headers), **forgery)

    response = await client.post(
        "/passkeys/register", headers=headers, json={"credential": credential}
    )

    assert response.status_code == status
    assert response.json()["error"] == "invalid_passkey"
    assert await passkey_rows(db) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_input"),
        ({"credential": "not an object"}, 422, "invalid_input"),
        ({"credential": {}}, 400, "invalid_passkey"),
        (
            {"credential": {"id": "x", "rawId": "!!", "type": "public-key", "response": {}}},
            400,
            "invalid_passkey",
        ),
        ({"credential": None, "name": "x"}, 422, "invalid_input"),
        ("NAME", 422, "invalid_input"),
    ],
)
async def test_bad_registration_bodies_write_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    body: Any,
    status: int,
    code: str,
) -> None:
    """A missing or malformed credential, or a bad name (empty, too long, a control
    character): a clear error, and no factor."""
    _, headers = await bearer(client)
    options = await creation_options(client, headers)
    if body == "NAME":
        for name in ("", "   ", "x" * 65, "a\u0000b", "tab\there", 7):
            credential = SoftAuthenticator().create(options)
            response = await client.post(
                "/passkeys/register", headers=headers, json={"credential": credential, "name": name}
            )
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"] == code
    else:
        response = await client.post("/passkeys/register", headers=headers, json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"] == code

    assert await passkey_rows(db) == []


async def test_registering_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    for path in ("/passkeys/register/options", "/passkeys/register"):
        response = await client.post(path, json={})
        assert response.status_code == 401
        assert response.json()["error"] == "missing_token"


async def test_request_options_with_an_email_list_its_passkeys(client: httpx.AsyncClient) -> None:
    """With `email`, its user's credentials; without, none (any discoverable passkey)."""
    user, headers = await bearer(client)
    authenticator = SoftAuthenticator()
    credential = authenticator.create(await creation_options(client, headers))
    await client.post("/passkeys/register", headers=headers, json={"credential": credential})

    named = await client.post("/passkeys/login/options", json={"email": user["email"].upper()})
    anyone = await client.post("/passkeys/login/options")
    bad = await client.post("/passkeys/login/options", json={"email": 7})

    assert [c["id"] for c in named.json()["allowCredentials"]] == [credential["id"]]
    assert anyone.json()["allowCredentials"] == []
    assert anyone.json()["rpId"] == "localhost"
    assert named.json()["challenge"] != anyone.json()["challenge"]
    assert bad.status_code == 422
