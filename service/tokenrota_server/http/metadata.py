"""HTTP handlers of users' metadata: PATCH /admin/users/{user_id} `{app_metadata}` (an
operator's, through the admin API's check) and PATCH /profile `{user_metadata}` (the user's
own, with a live session's bearer token). Each replaces the whole object; the caps and the
grammar are `metadata.check_metadata`'s (docs/admin.md).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import metadata
from tokenrota_server.errors import InvalidInput
from tokenrota_server.http.admin import admin_actor
from tokenrota_server.http.admin_accounts import user_id_param
from tokenrota_server.http.web import NO_STORE, bearer_token, read_json
from tokenrota_server.state import AppState


def _only(body: dict[str, Any], field: str) -> object:
    if set(body) != {field}:
        raise InvalidInput(f'The body is {{"{field}": {{...}}}}.')
    return body[field]


async def set_app_metadata(request: Request[AppState]) -> Response:
    """PATCH /admin/users/{user_id} {app_metadata}: 200 the user; nothing written on 422."""
    actor = await admin_actor(request)
    state = request.state
    user_id = user_id_param(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    value = metadata.check_metadata(_only(body, "app_metadata"), "app_metadata", claims_guard=True)
    updated = await metadata.set_app_metadata(
        state["pool"], user_id, value, actor=actor, now=state["clock"]()
    )
    return JSONResponse(updated.to_json(), headers=NO_STORE)


async def set_user_metadata(request: Request[AppState]) -> Response:
    """PATCH /profile {user_metadata}: 200 the profile with it; nothing written on 422."""
    state = request.state
    now = state["clock"]()
    caller = await state["auth"].authenticate(
        state["pool"], access_token=await bearer_token(request), now=now
    )
    body = await read_json(request, state["settings"].max_body_bytes)
    value = metadata.check_metadata(
        _only(body, "user_metadata"), "user_metadata", claims_guard=False
    )
    stored = await metadata.set_user_metadata(state["pool"], caller.user.id, value, now=now)
    return JSONResponse({"user": {**caller.user.to_json(), "user_metadata": stored}})


# PATCH /profile is served by GET /profile's route (`http/auth.py`), which calls the handler.
routes = [Route("/admin/users/{user_id}", set_app_metadata, methods=["PATCH"])]
