"""Second-factor HTTP handlers: managing factors, /login/mfa and the step-up /mfa/challenge."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import telemetry
from tokenrota_server.http import cookies
from tokenrota_server.http.auth import device_info
from tokenrota_server.http.web import (
    NO_STORE,
    bearer_token,
    boolean_field,
    path_uuid,
    read_json,
    refuse_other_fields,
    string_field,
    token_response,
)
from tokenrota_server.mfa import second_factor_of
from tokenrota_server.outcomes import LoginOutcome
from tokenrota_server.resources import resolve_target
from tokenrota_server.state import AppState


async def list_factors(request: Request[AppState]) -> Response:
    """GET /mfa/factors: the caller's live factors."""
    state = request.state
    found = await state["mfa"].list_factors(
        state["pool"], access_token=await bearer_token(request), now=state["clock"]()
    )
    return JSONResponse({"factors": [factor.to_json() for factor in found]}, headers=NO_STORE)


async def enroll_totp(request: Request[AppState]) -> Response:
    """POST /mfa/totp `{name?}`: 201 with the secret, its otpauth:// URI and QR code."""
    state = request.state
    token = await bearer_token(request)
    body = await read_json(request, state["settings"].max_body_bytes, allow_empty=True)
    refuse_other_fields(body, "name")
    name = string_field(body, "name") if "name" in body else None
    enrolment = await state["mfa"].enroll_totp(
        state["pool"], access_token=token, name=name, now=state["clock"]()
    )
    return token_response(enrolment.to_json(), status_code=201)


async def verify_totp(request: Request[AppState]) -> Response:
    """POST /mfa/totp/{factor_id}/verify `{code}`: the factor, live; recovery codes with the
    first one."""
    state = request.state
    token = await bearer_token(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    refuse_other_fields(body, "code")
    factor, codes = await state["mfa"].verify_totp(
        state["pool"],
        access_token=token,
        factor_id=_factor_id(request),
        code=string_field(body, "code"),
        now=state["clock"](),
    )
    answer: dict[str, Any] = {"factor": factor.to_json()}
    if codes is not None:
        answer["recovery_codes"] = codes
    return token_response(answer)


async def new_recovery_codes(request: Request[AppState]) -> Response:
    """POST /mfa/recovery-codes: a fresh set; the old one dies."""
    state = request.state
    codes = await state["mfa"].new_recovery_codes(
        state["pool"], access_token=await bearer_token(request), now=state["clock"]()
    )
    return token_response({"recovery_codes": codes})


async def remove_factor(request: Request[AppState]) -> Response:
    """DELETE /mfa/factors/{factor_id}: 204; 404 for a factor that is not the caller's."""
    state = request.state
    token = await bearer_token(request)
    await state["mfa"].remove_factor(
        state["pool"], access_token=token, factor_id=_factor_id(request), now=state["clock"]()
    )
    return Response(status_code=204)


async def login_mfa(request: Request[AppState]) -> Response:
    """POST /login/mfa `{mfa_token, code | recovery_code, use_cookie?}`: the token pair."""
    state = request.state
    telemetry.record(login=LoginOutcome.REJECTED)
    body = await read_json(request, state["settings"].max_body_bytes)
    mfa_token = string_field(body, "mfa_token")
    use_cookie = boolean_field(body, "use_cookie")
    answer = second_factor_of(_without(body, "mfa_token", "use_cookie", "resource"))
    # Before the code is checked, as /login checks it before the password: a bad resource
    # spends neither the mfa_token nor an attempt.
    target = await resolve_target(state["pool"], state["settings"], body.get("resource"))
    now = state["clock"]()
    proof = state["proofs"].check(
        request.headers.getlist("dpop"), method="POST", path="/login/mfa", now=now
    )
    pair = await state["mfa"].complete_login(
        state["pool"],
        mfa_token=mfa_token,
        answer=answer,
        now=now,
        device=device_info(request),
        proof=proof,
        target=target,
    )
    return cookies.pair_response(pair, state["settings"], in_cookie=use_cookie)


async def challenge(request: Request[AppState]) -> Response:
    """POST /mfa/challenge `{code | recovery_code, use_cookie?}` with a bearer token: a new
    pair for the same session, at aal2."""
    state = request.state
    token = await bearer_token(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    use_cookie = boolean_field(body, "use_cookie")
    answer = second_factor_of(_without(body, "use_cookie"))
    pair = await state["mfa"].step_up(
        state["pool"], access_token=token, answer=answer, now=state["clock"]()
    )
    return cookies.pair_response(pair, state["settings"], in_cookie=use_cookie)


def _without(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name not in names}


def _factor_id(request: Request[AppState]) -> UUID:
    return path_uuid(request, "factor_id", "No such factor.")


routes = [
    Route("/mfa/factors", list_factors, methods=["GET"]),
    Route("/mfa/factors/{factor_id}", remove_factor, methods=["DELETE"]),
    Route("/mfa/totp", enroll_totp, methods=["POST"]),
    Route("/mfa/totp/{factor_id}/verify", verify_totp, methods=["POST"]),
    Route("/mfa/recovery-codes", new_recovery_codes, methods=["POST"]),
    Route("/mfa/challenge", challenge, methods=["POST"]),
    Route("/login/mfa", login_mfa, methods=["POST"]),
]
