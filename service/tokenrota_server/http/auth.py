"""First-party HTTP handlers: parse the request, call a use case, render the answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import metadata, telemetry
from tokenrota_server.auth import DeviceInfo
from tokenrota_server.db import schema
from tokenrota_server.db.pool import CONNECTION_ERRORS
from tokenrota_server.errors import InvalidInput, Unavailable
from tokenrota_server.http import cookies
from tokenrota_server.http import metadata as metadata_routes
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import bearer_token, boolean_field, read_json, string_field
from tokenrota_server.outcomes import LoginOutcome, RefreshOutcome
from tokenrota_server.resources import resolve_target
from tokenrota_server.state import AppState


async def register(request: Request[AppState]) -> Response:
    """POST /register: 201 with the new user; `EmailTaken`, `WeakPassword`, `TooManyAttempts`
    (per remote address), body errors."""
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    user = await state["auth"].register(
        state["pool"],
        email=string_field(body, "email"),
        password=string_field(body, "password"),
        now=state["clock"](),
        ip=remote_address(request, state["settings"]),
    )
    if state["settings"].require_verified_email:
        # The user cannot log in (and so cannot ask) until the email is verified: send it now.
        await state["recovery"].send_verification(state["pool"], user, now=state["clock"]())
    return JSONResponse({"user": user.to_json()}, status_code=201)


async def login(request: Request[AppState]) -> Response:
    """POST /login: a token pair (refresh token in a cookie with `use_cookie`); 401 or 429."""
    state = request.state
    # A request refused before its credentials are checked (its body, a field) is rejected;
    # the use case records any other outcome over this one.
    telemetry.record(login=LoginOutcome.REJECTED)
    body = await read_json(request, state["settings"].max_body_bytes)
    use_cookie = boolean_field(body, "use_cookie")
    remember = body.get("remember", True)
    if not isinstance(remember, bool):
        raise InvalidInput("'remember' must be true or false.")
    now = state["clock"]()
    # Checked before the password, so a bad proof says nothing about the password.
    proof = state["proofs"].check(
        request.headers.getlist("dpop"), method="POST", path="/login", now=now
    )
    target = await resolve_target(state["pool"], state["settings"], body.get("resource"))
    pair = await state["auth"].login(
        state["pool"],
        email=string_field(body, "email"),
        password=string_field(body, "password"),
        now=now,
        device=device_info(request),
        remember=remember,
        proof=proof,
        target=target,
    )
    return cookies.pair_response(pair, state["settings"], in_cookie=use_cookie)


async def refresh(request: Request[AppState]) -> Response:
    """POST /refresh: the next pair, answered where the token came from (body or cookie)."""
    state = request.state
    # Every refusal, before or in the use case, counts as invalid; success records its kind.
    telemetry.record(refresh=RefreshOutcome.INVALID)
    token, from_cookie, body = await cookies.presented_refresh_token(request, state["settings"])
    now = state["clock"]()
    proof = state["proofs"].check(
        request.headers.getlist("dpop"), method="POST", path="/refresh", now=now
    )
    target = await resolve_target(state["pool"], state["settings"], body.get("resource"))
    pair = await state["auth"].refresh(
        state["pool"], refresh_token=token, now=now, proof=proof, target=target
    )
    return cookies.pair_response(pair, state["settings"], in_cookie=from_cookie)


async def logout(request: Request[AppState]) -> Response:
    """POST /logout: 204 and the refresh cookie cleared for any token presented, live or not."""
    state = request.state
    token, _, _ = await cookies.presented_refresh_token(request, state["settings"])
    await state["auth"].logout(state["pool"], refresh_token=token, now=state["clock"]())
    return cookies.clear_refresh_cookie(Response(status_code=204), state["settings"])


async def profile(request: Request[AppState]) -> Response:
    """GET /profile: the bearer token's user while its session lives; 401 or 403 otherwise.
    PATCH /profile is `http/metadata.py`'s (one route, so a 405 names both methods)."""
    if request.method == "PATCH":
        return await metadata_routes.set_user_metadata(request)
    state = request.state
    user = await state["auth"].profile(
        state["pool"], access_token=await bearer_token(request), now=state["clock"]()
    )
    # The user's own metadata (PATCH /profile); never in a token.
    user_metadata = await metadata.user_metadata_of(state["pool"], user.id)
    return JSONResponse({"user": {**user.to_json(), "user_metadata": user_metadata}})


async def healthz(request: Request[AppState]) -> Response:
    """The process is up and serving; says nothing of the database."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request[AppState]) -> Response:
    """Ready when the database answers and is migrated to head; 503 otherwise."""
    try:
        async with request.state["pool"].acquire(timeout=2) as connection:
            revision = await schema.current_revision(connection)
    except CONNECTION_ERRORS:
        revision = None
    if revision != schema.head_revision():
        raise Unavailable("The database is not ready.")
    return JSONResponse({"status": "ready", "revision": revision})


def device_info(request: Request[AppState]) -> DeviceInfo:
    """The user agent and address that a new session records."""
    return DeviceInfo(
        user_agent=request.headers.get("user-agent"),
        ip=remote_address(request, request.state["settings"]),
    )


routes = [
    Route("/register", register, methods=["POST"]),
    Route("/login", login, methods=["POST"]),
    Route("/refresh", refresh, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/profile", profile, methods=["GET", "PATCH"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
