"""Passkey HTTP handlers: creation and request options, registering, signing in with one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import telemetry
from tokenrota_server.errors import InvalidInput
from tokenrota_server.http import cookies
from tokenrota_server.http.auth import device_info
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import (
    NO_STORE,
    bearer_token,
    boolean_field,
    read_json,
    string_field,
)
from tokenrota_server.outcomes import LoginOutcome
from tokenrota_server.resources import resolve_target
from tokenrota_server.state import AppState


async def register_options(request: Request[AppState]) -> Response:
    """POST /passkeys/register/options: creation options for the bearer's user (a recent
    login, at aal2 once a factor exists)."""
    state = request.state
    options = await state["mfa"].passkey_options(
        state["pool"], access_token=await bearer_token(request), now=state["clock"]()
    )
    return JSONResponse(options, headers=NO_STORE)


async def register(request: Request[AppState]) -> Response:
    """POST /passkeys/register {credential, name?}: 201 with the new factor (and, with the
    first factor, the recovery codes)."""
    state = request.state
    token = await bearer_token(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    name = string_field(body, "name") if "name" in body else None
    factor, codes = await state["mfa"].register_passkey(
        state["pool"],
        access_token=token,
        credential=credential_field(body),
        name=name,
        now=state["clock"](),
    )
    answer: dict[str, Any] = {"factor": factor.to_json()}
    if codes is not None:
        answer["recovery_codes"] = codes
    return JSONResponse(answer, status_code=201, headers=NO_STORE)


async def login_options(request: Request[AppState]) -> Response:
    """POST /passkeys/login/options {email?}: request options (any discoverable passkey
    without an email); `TooManyAttempts` per remote address."""
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes, allow_empty=True)
    email = string_field(body, "email") if "email" in body else None
    options = await state["passkeys"].authentication_options(
        state["pool"],
        email=email,
        ip=remote_address(request, state["settings"]),
        now=state["clock"](),
    )
    return JSONResponse(options, headers=NO_STORE)


async def login(request: Request[AppState]) -> Response:
    """POST /passkeys/login {credential, use_cookie?, remember?}: a token pair for a
    discoverable passkey alone, as /login answers it (cookie transport, DPoP)."""
    state = request.state
    telemetry.record(login=LoginOutcome.REJECTED)
    body = await read_json(request, state["settings"].max_body_bytes)
    use_cookie = boolean_field(body, "use_cookie")
    remember = body.get("remember", True)
    if not isinstance(remember, bool):
        raise InvalidInput("'remember' must be true or false.")
    target = await resolve_target(state["pool"], state["settings"], body.get("resource"))
    now = state["clock"]()
    proof = state["proofs"].check(
        request.headers.getlist("dpop"), method="POST", path="/passkeys/login", now=now
    )
    pair = await state["passkeys"].login(
        state["pool"],
        credential=credential_field(body),
        now=now,
        device=device_info(request),
        remember=remember,
        proof=proof,
        target=target,
    )
    return cookies.pair_response(pair, state["settings"], in_cookie=use_cookie)


def credential_field(body: dict[str, Any]) -> dict[str, Any]:
    """The `credential` object (a PublicKeyCredential as JSON); raise `InvalidInput` otherwise."""
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise InvalidInput("'credential' must be a WebAuthn credential object.")
    return credential


routes = [
    Route("/passkeys/register/options", register_options, methods=["POST"]),
    Route("/passkeys/register", register, methods=["POST"]),
    Route("/passkeys/login/options", login_options, methods=["POST"]),
    Route("/passkeys/login", login, methods=["POST"]),
]
