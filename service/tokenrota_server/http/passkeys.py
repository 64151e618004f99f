"""Passkey HTTP handlers: creation and request options, registering, signing in with one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server.errors import InvalidInput
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import NO_STORE, bearer_token, read_json, string_field
from tokenrota_server.state import AppState

DEFAULT_NAME = "Passkey"


async def register_options(request: Request[AppState]) -> Response:
    """POST /passkeys/register/options: creation options for the bearer's user."""
    state = request.state
    now = state["clock"]()
    who = await state["auth"].authenticate(
        state["pool"], access_token=await bearer_token(request), now=now
    )
    options = await state["passkeys"].registration_options(state["pool"], user=who.user, now=now)
    return JSONResponse(options, headers=NO_STORE)


async def register(request: Request[AppState]) -> Response:
    """POST /passkeys/register {credential, name?}: 201 with the new factor."""
    state = request.state
    now = state["clock"]()
    who = await state["auth"].authenticate(
        state["pool"], access_token=await bearer_token(request), now=now
    )
    body = await read_json(request, state["settings"].max_body_bytes)
    name = string_field(body, "name") if "name" in body else DEFAULT_NAME
    factor = await state["passkeys"].register(
        state["pool"],
        user_id=who.user.id,
        credential=credential_field(body),
        name=name,
        now=now,
        ip=remote_address(request, state["settings"]),
    )
    return JSONResponse({"factor": factor.to_json()}, status_code=201)


async def login_options(request: Request[AppState]) -> Response:
    """POST /passkeys/login/options {email?}: request options (any discoverable passkey
    without an email)."""
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes, allow_empty=True)
    email = string_field(body, "email") if "email" in body else None
    options = await state["passkeys"].authentication_options(
        state["pool"], email=email, now=state["clock"]()
    )
    return JSONResponse(options, headers=NO_STORE)


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
]
