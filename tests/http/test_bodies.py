"""Request bodies at every JSON endpoint: malformed, mistyped, mislabelled or oversized.

Starlette alone would answer 500 to bad JSON, read a 20 MB body and take text/plain as JSON;
tokenrota_server/http/web.py must turn each into a clean 400, 413, 415 or 422 and write nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.checks import assert_error, settings_secrets
from tests.support import PASSWORD, RegisterAndLogin, TableSnapshot

JSON_ENDPOINTS = ["/register", "/login", "/refresh", "/logout"]
CREDENTIAL_ENDPOINTS = ["/register", "/login"]

MALFORMED = [
    pytest.param(b"{", id="truncated"),
    pytest.param(b'{"email": "a@b.c", "password": }', id="missing-value"),
    pytest.param(b"{'email': 'a@b.c'}", id="single-quotes"),
    pytest.param(b'{"email": "a@b.c",}', id="trailing-comma"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b'{"email": "\xe9@b.c", "password": "xxxxxxxx"}', id="latin1"),
    pytest.param('{"email": "a@b.c"}'.encode("utf-16"), id="utf16"),
    pytest.param(b'\xef\xbb\xbf{"email": "a@b.c"}', id="utf8-bom"),
    pytest.param(b"[]", id="list"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="true"),
    pytest.param(b"1", id="number"),
    pytest.param(b'"a string"', id="string"),
    pytest.param(b'{"email": NaN, "password": "xxxxxxxx"}', id="nan"),
    pytest.param(b'{"email": "a@b.c", "password": Infinity}', id="infinity"),
    pytest.param(b'{"email": "a@b.c", "password": -Infinity}', id="minus-infinity"),
    pytest.param(
        b'{"email": "a@b.c", "password": "xxxxxxxx", "password": "yyyyyyyy"}', id="duplicate-keys"
    ),
    pytest.param(b"[" * 20_000 + b"]" * 20_000, id="deeply-nested"),
    pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, id="deeply-nested-object"),
    pytest.param(b"\x00", id="nul"),
    pytest.param(b"{}garbage", id="trailing-garbage"),
    pytest.param(b"{} {}", id="two-documents"),
    pytest.param(b'{"email": ' + b"9" * 5000 + b"}", id="integer-too-long-to-convert"),
]

MISTYPED = [
    pytest.param({}, id="empty-object"),
    pytest.param({"email": "a@example.com"}, id="no-password"),
    pytest.param({"password": PASSWORD}, id="no-email"),
    pytest.param({"email": None, "password": PASSWORD}, id="email-null"),
    pytest.param({"email": 123, "password": PASSWORD}, id="email-number"),
    pytest.param({"email": ["a@example.com"], "password": PASSWORD}, id="email-list"),
    pytest.param({"email": {"$ne": ""}, "password": PASSWORD}, id="email-operator"),
    pytest.param({"email": True, "password": PASSWORD}, id="email-bool"),
    pytest.param({"email": "a@example.com", "password": None}, id="password-null"),
    pytest.param({"email": "a@example.com", "password": 12345678}, id="password-number"),
    pytest.param({"email": "a@example.com", "password": [PASSWORD]}, id="password-list"),
    pytest.param({"email": "a@example.com", "password": {"$gt": ""}}, id="password-operator"),
    pytest.param({"email": "a@example.com", "password": True}, id="password-bool"),
    pytest.param({"EMAIL": "a@example.com", "PASSWORD": PASSWORD}, id="wrong-case-keys"),
    pytest.param({"email": 1e308, "password": PASSWORD}, id="email-huge-float"),
]


@pytest.fixture
async def victim(client: httpx.AsyncClient, register_and_login: RegisterAndLogin) -> dict[str, Any]:
    """A registered user with a live session, whose rows the bad requests must not touch."""
    user, pair = await register_and_login(client)
    return {**user, **pair}


@pytest.mark.parametrize("body", MALFORMED)
async def test_malformed_json_is_400_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    victim: dict[str, Any],
    body: bytes,
    table_snapshot: TableSnapshot,
) -> None:
    """At each JSON endpoint in turn."""
    before = await table_snapshot(db)

    for path in JSON_ENDPOINTS:
        response = await client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )

        assert_error(response, 400, "invalid_request", secrets=settings_secrets(settings))
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("body", MISTYPED)
async def test_missing_or_mistyped_fields_are_422_and_write_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    body: dict[str, Any],
    table_snapshot: TableSnapshot,
) -> None:
    """Including NoSQL-style operator objects: a field is a string or the request is refused."""
    if body.get("email") == "a@example.com":
        body = {**body, "email": victim["email"]}
    before = await table_snapshot(db)

    for path in CREDENTIAL_ENDPOINTS:
        response = await client.post(path, json=body)

        assert_error(response, 422, "invalid_input")
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("path", ["/refresh", "/logout"])
@pytest.mark.parametrize("value", [123, True, ["a.b.c"], {"token": "a.b.c"}], ids=repr)
async def test_a_refresh_token_that_is_not_a_string_is_422(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    path: str,
    value: Any,
    table_snapshot: TableSnapshot,
) -> None:
    before = await table_snapshot(db)

    response = await client.post(path, json={"refresh_token": value})

    assert_error(response, 422, "invalid_input")
    assert await table_snapshot(db) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "application/json-patch+json",
        "json",
        "",
        None,
    ],
)
async def test_other_content_types_are_415(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    content_type: str | None,
    table_snapshot: TableSnapshot,
) -> None:
    """A JSON body under any other label is refused: a form cannot post JSON cross-site."""
    body = b'{"email": "%s", "password": "%s", "refresh_token": "%s"}' % (
        victim["email"].encode(),
        PASSWORD.encode(),
        victim["refresh_token"].encode(),
    )
    headers = {} if content_type is None else {"Content-Type": content_type}
    before = await table_snapshot(db)

    for path in JSON_ENDPOINTS:
        response = await client.post(path, content=body, headers=headers)

        assert_error(response, 415, "unsupported_media_type")
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON"])
async def test_json_with_parameters_or_other_case_is_still_json(
    client: httpx.AsyncClient, victim: dict[str, Any], content_type: str
) -> None:
    body = b'{"email": "%s", "password": "%s"}' % (victim["email"].encode(), PASSWORD.encode())

    response = await client.post("/login", content=body, headers={"Content-Type": content_type})

    assert response.status_code == 200


@pytest.mark.parametrize("size", [64 * 1024 + 1, 1024 * 1024, 20 * 1024 * 1024])
async def test_bodies_over_the_cap_are_413(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    size: int,
    table_snapshot: TableSnapshot,
) -> None:
    head = b'{"email": "%s", "password": "%s", "pad": "' % (
        victim["email"].encode(),
        PASSWORD.encode(),
    )
    body = head + b"x" * (size - len(head) - 2) + b'"}'
    assert len(body) == size
    before = await table_snapshot(db)

    for path in JSON_ENDPOINTS:
        response = await client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )

        assert_error(response, 413, "payload_too_large")
    assert await table_snapshot(db) == before


async def test_a_body_just_under_the_cap_is_read(
    client: httpx.AsyncClient, victim: dict[str, Any]
) -> None:
    head = b'{"email": "%s", "password": "%s", "pad": "' % (
        victim["email"].encode(),
        PASSWORD.encode(),
    )
    body = head + b"x" * (64 * 1024 - len(head) - 2) + b'"}'
    assert len(body) == 64 * 1024

    response = await client.post(
        "/login", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_a_chunked_body_without_length_is_cut_off_at_the_cap(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    path: str,
    table_snapshot: TableSnapshot,
) -> None:
    """No Content-Length to trust: the stream is read up to the cap and abandoned there."""
    chunk, total = b"x" * 1024, 4096
    sent: list[int] = []

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for index in range(total):
            sent.append(index)
            yield chunk
        yield b'"}'

    before = await table_snapshot(db)

    response = await client.post(
        path, content=stream(), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "payload_too_large")
    assert len(sent) < 100  # 64 KiB of a 4 MiB body, give or take a chunk
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("declared", ["-1", "abc", "1e3", " 10", "99999999999999999999999"])
async def test_a_nonsense_content_length_is_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    path: str,
    declared: str,
    table_snapshot: TableSnapshot,
) -> None:
    before = await table_snapshot(db)
    request = client.build_request(
        "POST", path, content=b"{}", headers={"Content-Type": "application/json"}
    )
    request.headers["Content-Length"] = declared

    response = await client.send(request)

    assert_error(response, {400, 413})
    assert await table_snapshot(db) == before
