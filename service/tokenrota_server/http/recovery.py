"""HTTP handlers for password reset and email verification, and the development mailbox:
POST /password/forgot, /password/reset, /email/verification, /email/verify; GET /dev/mailbox/latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import mailer
from tokenrota_server.errors import InvalidInput, NotFound
from tokenrota_server.http.accounts import authenticated_caller
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import (
    NO_STORE,
    bearer_token,
    read_json,
    refuse_other_fields,
    string_field,
)
from tokenrota_server.state import AppState

MAX_MAILBOX_WAIT = 10  # seconds GET /dev/mailbox/latest may wait for a message
# How often a waiter looks for messages another process wrote (this process's own wake it at
# once, by the outbox's `MailboxBell`); a look lists the folder and parses only if it changed.
OTHER_WRITERS_POLL = 0.25


async def forgot_password(request: Request[AppState]) -> Response:
    """POST /password/forgot: 202 `{}` for any well-formed email, known or not; 429."""
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    refuse_other_fields(body, "email")
    await state["recovery"].forgot(
        state["pool"],
        email=string_field(body, "email"),
        ip=remote_address(request, state["settings"]),
        now=state["clock"](),
    )
    return JSONResponse({}, status_code=202, headers=NO_STORE)


async def reset_password(request: Request[AppState]) -> Response:
    """POST /password/reset: 204, every session ended; 400 invalid_token, 422 weak_password."""
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    refuse_other_fields(body, "token", "new_password")
    await state["recovery"].reset_password(
        state["pool"],
        token=string_field(body, "token"),
        new_password=string_field(body, "new_password"),
        now=state["clock"](),
    )
    return Response(status_code=204)


async def request_verification(request: Request[AppState]) -> Response:
    """POST /email/verification: 202, a message is on its way; 409 already_verified; 429."""
    state = request.state
    caller = await authenticated_caller(request, await bearer_token(request))
    await state["recovery"].request_verification(
        state["pool"],
        caller,
        ip=remote_address(request, state["settings"]),
        now=state["clock"](),
    )
    return JSONResponse({}, status_code=202, headers=NO_STORE)


async def verify_email(request: Request[AppState]) -> Response:
    """POST /email/verify: 204, the email is verified; 400 invalid_token."""
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    refuse_other_fields(body, "token")
    await state["recovery"].verify_email(
        state["pool"], token=string_field(body, "token"), now=state["clock"]()
    )
    return Response(status_code=204)


async def latest_mail(request: Request[AppState]) -> Response:
    """GET /dev/mailbox/latest?to=&wait=: the development mailbox's newest message (to `to`).

    Development only: 404 in production or when mail goes to SMTP. `wait` (seconds, at most
    10) waits for a message to arrive, since the outbox sends after the request answered.
    """
    settings = request.state["settings"]
    if not settings.uses_dev_mailbox:
        raise NotFound()
    recipient = request.query_params.get("to") or None
    try:
        wait = float(request.query_params.get("wait", "0"))
    except ValueError:
        wait = math.nan
    if not 0 <= wait <= MAX_MAILBOX_WAIT:  # NaN too: it would never end the wait
        raise InvalidInput(f"'wait' must be 0 to {MAX_MAILBOX_WAIT} seconds.")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    bell = request.state["mailbox"]
    read: frozenset[str] | None = None
    message = None
    while True:
        delivered = bell.rung()
        names = await asyncio.to_thread(mailer.mailbox_names, settings)
        # Messages are parsed again only when one has arrived since they last were.
        if names != read:
            message = await asyncio.to_thread(mailer.latest_in_mailbox, settings, recipient)
            read = names
        remaining = deadline - loop.time()
        if message is not None or remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(delivered.wait(), min(remaining, OTHER_WRITERS_POLL))
    if message is None:
        raise NotFound("The development mailbox has no such message.")
    return JSONResponse(mailer.message_summary(message), headers=NO_STORE)


routes = [
    Route("/password/forgot", forgot_password, methods=["POST"]),
    Route("/password/reset", reset_password, methods=["POST"]),
    Route("/email/verification", request_verification, methods=["POST"]),
    Route("/email/verify", verify_email, methods=["POST"]),
    Route("/dev/mailbox/latest", latest_mail, methods=["GET"]),
]
