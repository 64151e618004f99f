"""HTTP handlers of operators' account actions in the admin API: POST /admin/users (create,
or invite), POST /admin/users/{id}/password-reset and .../verification (mail a link). The
same callers as the rest of the admin API (`http/admin.py`), checked first.

Body of POST /admin/users: `{email, invite?, roles?}` (docs/admin.md); any other key is 422.
"""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import admin_accounts
from tokenrota_server.db import roles
from tokenrota_server.db.account_tokens import Purpose
from tokenrota_server.errors import InvalidInput
from tokenrota_server.http.admin import admin_actor
from tokenrota_server.http.web import NO_STORE, path_uuid, read_json
from tokenrota_server.state import AppState


def user_id_param(request: Request[AppState]) -> UUID:
    """The path's user id; a malformed one is just not found."""
    return path_uuid(request, "user_id", "No such user.")


async def create_user(request: Request[AppState]) -> Response:
    """POST /admin/users {email, invite?, roles?}: 201 the user; with invite, a link to choose
    a password is mailed."""
    actor = await admin_actor(request)
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    if "email" not in body or not set(body) <= {"email", "invite", "roles"}:
        raise InvalidInput('The body is {"email", "invite"?: true|false, "roles"?: [names]}.')
    email, invite = body["email"], body.get("invite", False)
    if not isinstance(email, str):
        raise InvalidInput("'email' must be a string.")
    if not isinstance(invite, bool):
        raise InvalidInput("'invite' must be true or false.")
    created = await admin_accounts.create_user(
        state["pool"],
        state["passwords"],
        state["recovery"],
        email=email,
        invite=invite,
        role_names=roles.check_role_names(body.get("roles", [])),
        actor=actor,
        now=state["clock"](),
    )
    return JSONResponse(created.to_json(), status_code=201, headers=NO_STORE)


async def send_password_reset(request: Request[AppState]) -> Response:
    """POST /admin/users/{user_id}/password-reset: 202; a reset link is mailed to the user."""
    return await _send(request, Purpose.PASSWORD_RESET)


async def send_verification(request: Request[AppState]) -> Response:
    """POST /admin/users/{user_id}/verification: 202; a verification link is mailed."""
    return await _send(request, Purpose.EMAIL_VERIFICATION)


async def _send(request: Request[AppState], purpose: Purpose) -> Response:
    actor = await admin_actor(request)
    state = request.state
    await admin_accounts.send_account_mail(
        state["pool"],
        state["recovery"],
        user_id_param(request),
        purpose=purpose,
        actor=actor,
        now=state["clock"](),
    )
    return JSONResponse({}, status_code=202, headers=NO_STORE)


routes = [
    Route("/admin/users", create_user, methods=["POST"]),
    Route("/admin/users/{user_id}/password-reset", send_password_reset, methods=["POST"]),
    Route("/admin/users/{user_id}/verification", send_verification, methods=["POST"]),
]
