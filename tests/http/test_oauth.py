"""/oauth/token: client_credentials, refresh_token, and every way to ask wrongly (RFC 6749)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.oauth_support import basic, claims_of, client_token
from tests.support import CreateClient, FakeClock, RegisterAndLogin, TableSnapshot


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert set(response.json()) == {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_client_credentials_with_basic_auth(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """A client gets an access token naming itself, with its scopes, and no refresh token."""
    client_id, secret = await create_client(db, settings, scope="read write")

    response = await client_token(client, client_id, secret)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "read write"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert claims["scope"] == "read write"
    assert "sid" not in claims
    assert "email" not in claims


async def test_client_credentials_with_credentials_in_the_body(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """client_secret_post works as well as Basic."""
    client_id, secret = await create_client(db, settings)

    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )

    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["client_id"] == client_id


async def test_credentials_in_header_and_body_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """Two authentication methods at once: 400 invalid_request (RFC 6749 §2.3)."""
    client_id, secret = await create_client(db, settings)

    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers=basic(client_id, secret),
    )

    assert_oauth_error(response, 400, "invalid_request")


async def test_unknown_client_and_wrong_secret_look_the_same(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """Same status, body and headers for an unknown id, a wrong secret and a disabled client."""
    client_id, secret = await create_client(db, settings)
    disabled_id, disabled_secret = await create_client(db, settings)
    await db.execute("UPDATE clients SET disabled_at = now() WHERE client_id = $1", disabled_id)

    answers = [
        await client_token(client, "no-such-client", secret),
        await client_token(client, client_id, secret + "x"),
        await client_token(client, disabled_id, disabled_secret),
        await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"},
        ),
    ]

    for response in answers:
        assert_oauth_error(response, 401, "invalid_client")
        assert response.headers["www-authenticate"].startswith("Basic")
    assert len({response.text for response in answers}) == 1
    # Each response has its own X-Request-ID; everything else must be identical.
    headers = [
        sorted((name, value) for name, value in response.headers.items() if name != "x-request-id")
        for response in answers[:3]
    ]
    assert headers[0] == headers[1] == headers[2]


@pytest.mark.parametrize(
    "authorization",
    ["Basic", "Basic !!!", "Basic " + "bm9jb2xvbg==", "Bearer abc", "Basic Og=="],
)
async def test_malformed_basic_credentials_are_invalid_client(
    client: httpx.AsyncClient, authorization: str
) -> None:
    """Undecodable Basic credentials, no colon, empty halves, another scheme: 401."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
    )

    assert_oauth_error(response, 401, "invalid_client")


async def test_no_client_credentials_is_invalid_client(client: httpx.AsyncClient) -> None:
    """client_credentials without any credentials, or an id without a secret: 401."""
    without = await client.post("/oauth/token", data={"grant_type": "client_credentials"})
    id_only = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": "abc"}
    )

    assert_oauth_error(without, 401, "invalid_client")
    assert_oauth_error(id_only, 401, "invalid_client")


async def test_scope_narrowing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """A client may ask for fewer of its scopes; one beyond them is invalid_scope."""
    client_id, secret = await create_client(db, settings, scope="read write")

    narrowed = await client_token(client, client_id, secret, scope="read")
    beyond = await client_token(client, client_id, secret, scope="read admin")
    malformed = await client_token(client, client_id, secret, scope="read  write")

    assert narrowed.json()["scope"] == "read"
    assert claims_of(narrowed.json()["access_token"])["scope"] == "read"
    assert_oauth_error(beyond, 400, "invalid_scope")
    assert_oauth_error(malformed, 400, "invalid_scope")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {"grant_type": "password", "username": "a@b.c", "password": "x"},
            "unsupported_grant_type",
        ),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": ""}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": ""}, "invalid_request"),
    ],
)
async def test_unsupported_or_missing_parameters(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    form: dict[str, str],
    error: str,
    table_snapshot: TableSnapshot,
) -> None:
    """The password grant is refused (RFC 9700 §2.4); missing or empty ones are invalid_request."""
    before = await table_snapshot(db)

    response = await client.post("/oauth/token", data=form)

    assert_oauth_error(response, 400, error)
    assert await table_snapshot(db) == before


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type=client_credentials&grant_type=client_credentials",
        b"grant_type=client_credentials&scope=read&scope=write",
        b"grant_type=client_credentials&scope=&scope=",
        b"grant_type=client_credentials&&scope=read",
        b"grant_type",
        b"grant_type=client_credentials&scope=%FF",
        b"grant_type=\xff",
    ],
)
async def test_repeated_or_malformed_parameters(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    body: bytes,
    create_client: CreateClient,
) -> None:
    """Repeated parameters (RFC 6749 §3.1) and unparsable forms: 400 invalid_request."""
    client_id, secret = await create_client(db, settings)

    response = await client.post(
        "/oauth/token",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **basic(client_id, secret)},
    )

    assert_oauth_error(response, 400, "invalid_request")


async def test_other_media_types_and_url_parameters_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """JSON bodies, and parameters in the query string, are not read."""
    client_id, secret = await create_client(db, settings)

    as_json = await client.post(
        "/oauth/token", json={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )
    in_url = await client.post(
        "/oauth/token?grant_type=client_credentials",
        data={"grant_type": "client_credentials"},
        headers=basic(client_id, secret),
    )

    assert_oauth_error(as_json, 400, "invalid_request")
    assert_oauth_error(in_url, 400, "invalid_request")


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    """A body over the cap: 413, whether or not it declares its length."""
    declared = await client.post("/oauth/token", data={"grant_type": "x" * 70_000})

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"a" * 1024

    streamed = await client.post(
        "/oauth/token",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert declared.status_code == 413
    assert streamed.status_code == 413


async def test_refresh_token_grant_rotates_like_refresh(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    clock: FakeClock,
    register_and_login: RegisterAndLogin,
) -> None:
    """grant_type=refresh_token rotates; a replay after the window kills the session."""
    _, pair = await register_and_login(client)

    first = await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    )
    clock.advance(60)
    replay = await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    )
    child = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
    )

    assert first.status_code == 200, first.text
    assert first.json()["token_type"] == "Bearer"
    assert first.json()["refresh_token"] != pair["refresh_token"]
    assert first.headers["cache-control"] == "no-store"
    assert_oauth_error(replay, 400, "invalid_grant")
    assert_oauth_error(child, 400, "invalid_grant")
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "reuse_detected"


async def test_refresh_token_grant_checks_client_credentials_when_given(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
    table_snapshot: TableSnapshot,
) -> None:
    """A confidential client must authenticate correctly; a wrong secret spends nothing."""
    client_id, secret = await create_client(db, settings)
    _, pair = await register_and_login(client)
    form = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    before = await table_snapshot(db)

    wrong = await client.post("/oauth/token", data=form, headers=basic(client_id, "wrong"))
    after_wrong = await table_snapshot(db)
    right = await client.post("/oauth/token", data=form, headers=basic(client_id, secret))

    assert_oauth_error(wrong, 401, "invalid_client")
    assert after_wrong == before
    assert right.status_code == 200, right.text


@pytest.mark.parametrize(
    "token_of",
    [
        lambda pair: "garbage",
        lambda pair: pair["access_token"],
        lambda pair: pair["refresh_token"] + "=",
    ],
    ids=["garbage", "access-token", "padded"],
)
async def test_refresh_token_grant_refuses_bad_tokens(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    token_of: object,
    register_and_login: RegisterAndLogin,
    table_snapshot: TableSnapshot,
) -> None:
    """Anything but a live refresh token is invalid_grant, and writes nothing."""
    _, pair = await register_and_login(client)
    before = await table_snapshot(db)

    response = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token_of(pair)},  # type: ignore[operator]
    )

    assert_oauth_error(response, 400, "invalid_grant")
    assert await table_snapshot(db) == before


async def test_refresh_token_grant_refuses_a_scope(
    client: httpx.AsyncClient, register_and_login: RegisterAndLogin
) -> None:
    """A user's grant has no scope to widen: asking for one is invalid_scope."""
    _, pair = await register_and_login(client)

    response = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"], "scope": "x"},
    )

    assert_oauth_error(response, 400, "invalid_scope")


async def test_client_token_is_no_user_token(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """A service's access token does not open /profile."""
    client_id, secret = await create_client(db, settings)
    access = (await client_token(client, client_id, secret)).json()["access_token"]

    response = await client.get("/profile", headers={"Authorization": f"Bearer {access}"})

    assert response.status_code == 403


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    """GET on the token endpoint: 405 JSON."""
    response = await client.get("/oauth/token")

    assert response.status_code == 405


METADATA = "/.well-known/oauth-authorization-server"


@pytest.mark.parametrize(
    ("changes", "base"),
    [
        pytest.param(
            {"token_issuer": "https://auth.example/tenant"},
            "https://auth.example/tenant",
            id="url-issuer",
        ),
        pytest.param(
            {"public_url": "https://auth.example/"}, "https://auth.example", id="public-url"
        ),
        pytest.param({"host": "10.1.2.3", "port": 8443}, "http://10.1.2.3:8443", id="own-address"),
    ],
)
async def test_metadata_endpoints_come_from_configuration_not_the_host_header(
    make_settings, clock: FakeClock, serve, changes: dict[str, object], base: str
) -> None:
    """A forged Host (or X-Forwarded-Host) cannot move the endpoints of a publicly cached answer."""
    settings = make_settings(**changes)

    async with serve(settings, clock) as client:
        honest = await client.get(METADATA)
        forged = await client.get(
            METADATA, headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
        )
        absolute = await client.get(f"https://evil.example:4443{METADATA}")

    assert honest.status_code == 200
    assert honest.headers["cache-control"].startswith("public")
    assert forged.json() == honest.json() == absolute.json()
    body = honest.json()
    assert body["token_endpoint"] == f"{base}/oauth/token"
    assert body["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert body["introspection_endpoint"] == f"{base}/oauth/introspect"
    assert "evil" not in forged.text
