"""tokenrota.revocations: a resource server that follows the feed refuses a revoked session's
or client token's access tokens, keeps bounded memory, and says so when the feed is stale."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.claims import AccessClaims
from tokenrota.errors import InvalidToken, Unavailable
from tokenrota.revocations import RevocationFollower
from tokenrota.verify import TokenVerifier, protect
from tokenrota_server.config import Settings
from tokenrota_server.db import oauth_clients

from tests.conftest import PASSWORD, FakeClock, register_and_login
from tests.oauth_support import FEED_SCOPE, FakeMonotonic, basic, client_token, create_client

# How long a test waits for a rejection before failing: a deadline against hanging, not a
# latency check (latency is measured in bench/revocation_latency.py).
DEADLINE_SECONDS = 20.0


def resource_app(verifier: TokenVerifier) -> Starlette:
    async def whoami(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/whoami", whoami)], middleware=[protect(verifier)])


@pytest.fixture
async def follower(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> AsyncIterator[RevocationFollower]:
    """A follower of the in-process service's feed, with a client of its own; stopped after."""
    client_id, secret = await create_client(db, settings, scope=FEED_SCOPE)
    following = RevocationFollower(
        "http://testserver/oauth/revocations",
        client,
        client_id=client_id,
        client_secret=secret,
        token_lifetime=settings.access_token_ttl,
        leeway=settings.jwt_leeway,
        wait=5,
        clock=clock,
    )
    async with following:
        yield following


@pytest.fixture
async def resource(
    follower: RevocationFollower, settings: Settings, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """A resource server whose verifier follows the feed."""
    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        revocations=follower,
        clock=clock,
    )
    transport = httpx.ASGITransport(app=resource_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


async def refused(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """Ask /whoami with `token` until it is refused; the refusal."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        response = await http.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            return response
        await asyncio.sleep(0.05)
    raise AssertionError("the token was never refused")


async def caught_up(follower: RevocationFollower) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while follower.stale:
        assert time.monotonic() < deadline, "the follower never caught up"
        await asyncio.sleep(0.02)


async def test_every_revoking_path_is_refused_at_the_resource_server(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    follower: RevocationFollower,
    resource: httpx.AsyncClient,
) -> None:
    """logout, logout/all, DELETE /sessions/{id}, password change, disable, reuse detection,
    /oauth/revoke of a user's and of a client's token, erasing a user: each of those tokens,
    accepted before, is refused after with 403 invalid_token, `session_revoked` (a client's
    token, which has no session: `token_revoked`)."""
    credentials = await create_client(db, settings, scope="read")
    await caught_up(follower)
    tokens: dict[str, str] = {}

    async def accepted(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        user, pair = await register_and_login(client)
        answer = await resource.get("/whoami", headers=bearer(pair))
        assert answer.status_code == 200
        tokens[path] = pair["access_token"]
        return user, pair

    _, pair = await accepted("logout")
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    _, pair = await accepted("logout/all")
    await client.post("/logout/all", headers=bearer(pair))
    user, pair = await accepted("DELETE /sessions/{id}")
    listed = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"]
    await client.delete(f"/sessions/{listed[0]['id']}", headers=bearer(pair))
    user, pair = await accepted("password change")
    other = (
        await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    ).json()
    await client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "another horse battery"},
        headers=bearer(other),
    )
    user, _ = await accepted("disable")
    await db.execute(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'user_disabled'"
        " WHERE user_id = $1",
        uuid.UUID(user["id"]),
    )
    _, pair = await accepted("reuse detection")
    await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    clock.advance(settings.refresh_reuse_interval + 1)
    await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    _, pair = await accepted("/oauth/revoke (user)")
    await client.post(
        "/oauth/revoke", data={"token": pair["access_token"]}, headers=basic(*credentials)
    )
    user, _ = await accepted("erase user")
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user["id"]))
    access = (await client_token(client, *credentials)).json()["access_token"]
    assert (await resource.get("/whoami", headers={"Authorization": f"Bearer {access}"})).is_success
    tokens["/oauth/revoke (client)"] = access
    await client.post("/oauth/revoke", data={"token": access}, headers=basic(*credentials))

    answers = {path: await refused(resource, token) for path, token in tokens.items()}

    for path, answer in answers.items():
        assert answer.status_code == 403, path
        assert answer.json()["error"] == "invalid_token", path
        # A client's token has no session: its reason names the token.
        reason = "token_revoked" if path == "/oauth/revoke (client)" else "session_revoked"
        assert answer.json()["error_description"].startswith(f"{reason}:"), path


async def test_a_disabled_clients_tokens_are_refused_at_the_resource_server(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    follower: RevocationFollower,
    resource: httpx.AsyncClient,
) -> None:
    """Every token of a client disabled (as `tokenrota disable-client` does) is refused, each
    of them without its own revocation; another client's token still passes."""
    credentials = await create_client(db, settings, scope="read")
    bystander = await create_client(db, settings, scope="read")
    await caught_up(follower)
    tokens = [(await client_token(client, *credentials)).json()["access_token"] for _ in range(2)]
    kept = (await client_token(client, *bystander)).json()["access_token"]
    for token in [*tokens, kept]:
        answer = await resource.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200

    assert await oauth_clients.disable_client(db, credentials[0], clock())
    answers = [await refused(resource, token) for token in tokens]
    still = await resource.get("/whoami", headers={"Authorization": f"Bearer {kept}"})

    for answer in answers:
        assert answer.status_code == 403
        assert answer.json()["error"] == "invalid_token"
        assert answer.json()["error_description"] == (
            "token_revoked: the token's client has been disabled."
        )
    assert still.status_code == 200


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def test_a_restarted_follower_catches_up_from_the_initial_window(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """A follower started after the revocation (a resource server restarted) still refuses the
    token: its first read covers the last token lifetime."""
    client_id, secret = await create_client(db, settings, scope=FEED_SCOPE)
    _, pair = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    later = RevocationFollower(
        "http://testserver/oauth/revocations",
        client,
        client_id=client_id,
        client_secret=secret,
        wait=5,
        clock=clock,
    )
    claims = AccessClaims(
        subject="x",
        session_id=await db.fetchval("SELECT id::text FROM sessions"),
        jti="j",
        issued_at=0,
        expires_at=0,
        scope="",
        email="e",
    )

    async with later:
        await caught_up(later)
        with pytest.raises(InvalidToken, match="session_revoked"):
            later.check(claims)


def session_claims(session_id: str) -> AccessClaims:
    return AccessClaims(
        subject="user",
        session_id=session_id,
        jti=uuid.uuid4().hex,
        issued_at=0,
        expires_at=0,
        scope="",
        email="user@example.com",
    )


def quiet_follower(clock: FakeClock, **options: Any) -> RevocationFollower:
    """A follower that is fed by hand (its task is never started)."""
    return RevocationFollower(
        "http://unused.invalid/oauth/revocations",
        httpx.AsyncClient(),
        client_id="c",
        client_secret="s",
        clock=clock,
        **options,
    )


@pytest.mark.slow
def test_memory_stays_bounded_after_100000_revocations(clock: FakeClock) -> None:
    """100,000 revocations over 5 hours (1000 per answer, 3 min apart): the follower keeps only
    those within a token lifetime + leeway, and its memory does not grow with the total."""
    follower = quiet_follower(clock, token_lifetime=900, leeway=30)
    tracemalloc.start()
    try:
        peak_after: list[int] = []
        for page in range(100):
            start = int(clock().timestamp())
            # Ids of a uuid's length, counted rather than drawn: under tracemalloc, 100,000
            # uuid4() cost more than half the test's time.
            body = {
                "cursor": f"c{page}",
                "sessions": [
                    {"sid": f"{page:08x}-0000-4000-8000-{i:012x}", "revoked_at": start}
                    for i in range(990)
                ],
                "tokens": [{"jti": f"{page:08x}{i:024x}", "exp": start + 600} for i in range(10)],
            }
            follower.apply(body)
            clock.advance(180)
            current, _ = tracemalloc.get_traced_memory()
            peak_after.append(current)
    finally:
        tracemalloc.stop()

    # 930 s of retention at one page per 180 s: at most 6 pages' worth are kept.
    assert follower.entries <= 6 * 1000
    assert len(follower._expiry) <= 6 * 1000
    # Memory after the 100th page is about what it was after the 10th, not ten times more.
    assert peak_after[-1] < 2 * peak_after[9]


@pytest.mark.parametrize(
    ("kind", "entry"),
    [("sessions", {"sid": str(uuid.uuid4())}), ("clients", {"client_id": "svc-1"})],
    ids=["session", "disabled client"],
)
def test_a_revocation_is_forgotten_only_when_its_tokens_have_expired(
    clock: FakeClock, kind: str, entry: dict[str, str]
) -> None:
    """A session, or a disabled client, is kept until revoked_at + token lifetime + leeway,
    and not a second less."""
    follower = quiet_follower(clock, token_lifetime=900, leeway=30)
    body: dict[str, Any] = {"cursor": "c", "sessions": [], "tokens": []}
    body[kind] = [{**entry, "revoked_at": int(clock().timestamp())}]
    follower.apply(body)

    clock.advance(929)
    follower.forget_expired()
    kept = follower.entries
    clock.advance(1)
    follower.forget_expired()

    assert kept == 1
    assert follower.entries == 0


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"sessions": [], "tokens": []},
        {"cursor": "c", "sessions": [{"sid": "not a uuid", "revoked_at": 1}], "tokens": []},
        {"cursor": "c", "sessions": [], "tokens": [{"jti": "j", "exp": "soon"}]},
        {"cursor": "c", "sessions": {}, "tokens": []},
        {"cursor": "c", "sessions": [], "tokens": [], "clients": {}},
        {"cursor": "c", "sessions": [], "tokens": [], "clients": [{"revoked_at": 1}]},
    ],
)
def test_an_answer_that_is_not_the_feeds_is_refused_whole(clock: FakeClock, body: Any) -> None:
    follower = quiet_follower(clock)

    with pytest.raises(ValueError, match="feed"):
        follower.apply(body)

    assert follower.entries == 0


async def test_an_unreachable_feed_is_reported_and_fail_closed_refuses(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed never answers: past `stale_after` a warning is logged and `stale` is true;
    fail_closed refuses tokens (Unavailable), fail-open still accepts them."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    monotonic = FakeMonotonic()
    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    options: dict[str, Any] = {
        "client_id": "c",
        "client_secret": "s",
        "wait": 5,
        "stale_after": 10,
        "clock": clock,
        "monotonic_clock": monotonic,
    }
    closed = RevocationFollower(
        "http://feed.invalid/oauth/revocations", http, fail_closed=True, **options
    )
    open_ = RevocationFollower("http://feed.invalid/oauth/revocations", http, **options)
    claims = session_claims(str(uuid.uuid4()))

    async with closed, open_:
        await asyncio.sleep(0.05)
        monotonic.advance(11)
        with caplog.at_level(logging.WARNING, logger="tokenrota.revocations"):
            stale = closed.stale, open_.stale
        with pytest.raises(Unavailable):
            closed.check(claims)
        open_.check(claims)

    assert stale == (True, True)
    assert "revocation feed unreachable" in caplog.text


async def test_lag_is_zero_on_an_idle_healthy_follower_and_counts_once_answers_stop(
    clock: FakeClock,
) -> None:
    """While the service holds its long poll, the follower is current: lag 0, however long the
    poll has been held within `wait`. An answer late past `wait`, or no answer after a failure,
    counts from when one was due (or last came)."""
    monotonic = FakeMonotonic()
    held, answer, failing, failed = (asyncio.Event() for _ in range(4))

    async def feed(request: httpx.Request) -> httpx.Response:
        if failing.is_set():
            failed.set()
            raise httpx.ConnectError("refused", request=request)
        if request.url.params["wait"] != "0":
            held.set()
            await answer.wait()
            answer.clear()
        return httpx.Response(200, json={"cursor": "c", "sessions": [], "tokens": []})

    follower = RevocationFollower(
        "http://feed.test/oauth/revocations",
        httpx.AsyncClient(transport=httpx.MockTransport(feed)),
        client_id="c",
        client_secret="s",
        wait=20,
        stale_after=30,
        clock=clock,
        monotonic_clock=monotonic,
    )

    async with follower:
        await held.wait()  # caught up, and its first long poll is held
        monotonic.advance(19)
        idle = follower.lag_seconds, follower.stale
        monotonic.advance(5)
        late = follower.lag_seconds
        failing.set()
        answer.set()  # the held poll answers; the next read fails
        await failed.wait()
        monotonic.advance(7)
        unanswered = follower.lag_seconds

    assert idle == (0, False)
    assert late == 4
    assert unanswered == 7
