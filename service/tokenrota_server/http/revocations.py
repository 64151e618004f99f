"""GET /oauth/revocations: the revocation feed, long-polled by resource servers.

Client authentication as /oauth/introspect, but in the `Authorization: Basic` header only: a GET
has no body, and credentials never travel in the URL. The client must hold the scope
`revocations:read`, which an operator grants; any other client gets 403 insufficient_scope.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.errors import InsufficientScope

from tokenrota_server.db.feed import Cursor, FeedPage
from tokenrota_server.errors import InvalidClient, MalformedRequest
from tokenrota_server.http.oauth import client_secret_of
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import NO_STORE
from tokenrota_server.revocations import FEED_SCOPE, MAX_WAIT_SECONDS, follow
from tokenrota_server.state import AppState

_PARAMETERS = frozenset({"after", "wait"})


async def revocations(request: Request[AppState]) -> Response:
    """The sessions and client tokens revoked after `after` (or lately), held up to `wait` s."""
    state = request.state
    settings = state["settings"]
    presented = client_secret_of(request, {})
    if presented is None:
        raise InvalidClient()
    follower = await state["oauth"].authenticate(
        state["pool"], presented, ip=remote_address(request, settings), now=state["clock"]()
    )
    # The feed names every revoked session and token: only clients granted it may read it.
    if FEED_SCOPE not in follower.scopes:
        raise InsufficientScope((FEED_SCOPE,))
    after, wait = _parameters(request.url.query)
    following = follow(
        state["pool"],
        state["feed"],
        after=after,
        wait=wait,
        now=state["clock"](),
        window_seconds=settings.access_token_ttl + settings.jwt_leeway,
        poll_interval=settings.revocation_poll_interval,
    )
    page = await _unless_disconnected(request, following) if wait else await following
    return JSONResponse(page.to_json(), headers=NO_STORE)


async def _unless_disconnected(
    request: Request[AppState], following: Awaitable[FeedPage]
) -> FeedPage:
    """The page, or `ClientDisconnect` (logged and counted as 499) as soon as the client has
    gone: a long poll nobody waits for would re-read the feed to the end of its `wait`."""
    answer = asyncio.ensure_future(following)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, gone):
            task.cancel()
    if answer.done() and not answer.cancelled():
        return answer.result()
    with contextlib.suppress(asyncio.CancelledError):
        await answer
    raise ClientDisconnect()


async def _disconnected(request: Request[AppState]) -> None:
    # A GET's body is one empty message; the next one the server hands over is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _parameters(query: str) -> tuple[Cursor | None, int]:
    """`after` (a cursor) and `wait` (0 to 30 s); raise `MalformedRequest` otherwise."""
    try:
        pairs = parse_qsl(query, strict_parsing=bool(query), max_num_fields=len(_PARAMETERS))
    except ValueError:
        raise MalformedRequest("The query is not valid.") from None
    given = dict(pairs)
    if len(given) != len(pairs) or not set(given) <= _PARAMETERS:
        raise MalformedRequest("The query takes 'after' and 'wait', each at most once.")
    after = Cursor.parse(given["after"]) if "after" in given else None
    raw_wait = given.get("wait", "0")
    if not raw_wait.isascii() or not raw_wait.isdigit() or int(raw_wait) > MAX_WAIT_SECONDS:
        raise MalformedRequest(f"'wait' is a whole number of seconds from 0 to {MAX_WAIT_SECONDS}.")
    return after, int(raw_wait)


routes = [Route("/oauth/revocations", revocations, methods=["GET"])]
