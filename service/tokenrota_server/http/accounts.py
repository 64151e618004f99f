"""HTTP handlers for a user's own sessions and password: GET/DELETE/PATCH /sessions,
/logout/all, /password. Each is bearer-protected with the same live-session check as /profile."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server.auth import SessionUser
from tokenrota_server.errors import InvalidInput
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import (
    NO_STORE,
    bearer_token,
    path_uuid,
    read_json,
    refuse_other_fields,
    string_field,
)
from tokenrota_server.state import AppState

# The sessions table's CHECK (migration 0007) allows the same.
MAX_SESSION_NAME_LENGTH = 100


async def list_sessions(request: Request[AppState]) -> Response:
    """GET /sessions: the caller's live sessions, the current one marked."""
    state = request.state
    caller = await authenticated_caller(request, await bearer_token(request))
    found = await state["accounts"].list_sessions(state["pool"], caller, now=state["clock"]())
    body = [{**session.to_json(), "current": session.id == caller.session_id} for session in found]
    return JSONResponse({"sessions": body}, headers=NO_STORE)


async def revoke_session(request: Request[AppState]) -> Response:
    """DELETE /sessions/{session_id}: 204; 404 for any session that is not the caller's."""
    state = request.state
    caller = await authenticated_caller(request, await bearer_token(request))
    session_id = path_uuid(request, "session_id", "No such session.")
    await state["accounts"].revoke_session(
        state["pool"], caller, session_id=session_id, now=state["clock"]()
    )
    return Response(status_code=204)


async def rename_session(request: Request[AppState]) -> Response:
    """PATCH /sessions/{session_id} `{"name"}`: 200 with the session's name; 404 for any session
    that is not the caller's; 422 for a name that is not 1 to 100 printable characters (or
    null, which clears it), or a body with another field."""
    state = request.state
    # The caller first: an anonymous request learns nothing from how its body is judged.
    caller = await authenticated_caller(request, await bearer_token(request))
    body = await read_json(request, state["settings"].max_body_bytes)
    refuse_other_fields(body, "name")
    if "name" not in body:
        raise InvalidInput("'name' is required (null clears it).")
    name = body["name"]
    if name is not None:
        name = string_field(body, "name").strip()
        if not name or len(name) > MAX_SESSION_NAME_LENGTH or not name.isprintable():
            raise InvalidInput(
                f"'name' must be 1 to {MAX_SESSION_NAME_LENGTH} printable characters, or null."
            )
    session_id = path_uuid(request, "session_id", "No such session.")
    await state["accounts"].rename_session(
        state["pool"], caller, session_id=session_id, name=name, now=state["clock"]()
    )
    return JSONResponse({"id": str(session_id), "name": name}, headers=NO_STORE)


async def logout_all(request: Request[AppState]) -> Response:
    """POST /logout/all: 204 once every session of the caller, this one included, is revoked."""
    state = request.state
    caller = await authenticated_caller(request, await bearer_token(request))
    await state["accounts"].logout_all(state["pool"], caller, now=state["clock"]())
    return Response(status_code=204)


async def change_password(request: Request[AppState]) -> Response:
    """POST /password: 204; 401 for a wrong current password, 422 for a weak new one, 429."""
    state = request.state
    # The token is read before the body: an anonymous caller learns nothing more.
    access_token = await bearer_token(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    current_password = string_field(body, "current_password")
    new_password = string_field(body, "new_password")
    caller = await authenticated_caller(request, access_token)
    await state["accounts"].change_password(
        state["pool"],
        caller,
        current_password=current_password,
        new_password=new_password,
        now=state["clock"](),
        ip=remote_address(request, state["settings"]),
    )
    return Response(status_code=204)


async def authenticated_caller(request: Request[AppState], access_token: str) -> SessionUser:
    """The user and live session behind `access_token`; raise `InvalidToken` or `TokenExpired`."""
    state = request.state
    return await state["auth"].authenticate(
        state["pool"], access_token=access_token, now=state["clock"]()
    )


routes = [
    Route("/sessions", list_sessions, methods=["GET"]),
    Route("/sessions/{session_id}", revoke_session, methods=["DELETE"]),
    Route("/sessions/{session_id}", rename_session, methods=["PATCH"]),
    Route("/logout/all", logout_all, methods=["POST"]),
    Route("/password", change_password, methods=["POST"]),
]
