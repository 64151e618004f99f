"""HTTP handlers of the admin API under /admin: users, their roles and sessions, roles,
resources, the audit log. For operators (a person's own admin-audience token) and their tools
(an admin client's token).

Every handler first checks the caller (`admin.authorize_admin`), before it reads a path
parameter or a body, so a refused caller learns nothing and nothing is read or written; the
refusals (docs/admin.md) follow `tokenrota.bearer`.
"""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import admin, resources
from tokenrota_server.db import pagination, roles
from tokenrota_server.errors import InvalidInput, NotFound
from tokenrota_server.http import audit_filters
from tokenrota_server.http.web import (
    NO_STORE,
    bearer_token,
    boolean_field,
    path_uuid,
    read_json,
)
from tokenrota_server.state import AppState


async def _actor(request: Request[AppState]) -> str:
    """The audit actor of an authorized admin call; raise the bearer refusals."""
    state = request.state
    return await admin.authorize_admin(
        state["pool"],
        state["codec"],
        state["settings"],
        await bearer_token(request),
        state["clock"](),
    )


async def admin_actor(request: Request[AppState]) -> str:
    """The audit actor of an authorized admin call, for the admin API's other modules."""
    return await _actor(request)


def _user_id(request: Request[AppState]) -> UUID:
    return path_uuid(request, "user_id", "No such user.")


def _role_name(request: Request[AppState]) -> str:
    name: str = request.path_params["name"]
    if not roles.ROLE_NAME.fullmatch(name):
        raise NotFound("No such role.")
    return name


def _resource_id(request: Request[AppState]) -> UUID:
    return path_uuid(request, "resource_id", "No such resource.")


def _json(body: object, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, headers=NO_STORE)


async def list_users(request: Request[AppState]) -> Response:
    """GET /admin/users?email=&cursor=&limit=: a page of users, oldest first."""
    await _actor(request)
    params = request.query_params
    page, next_cursor = await admin.list_users(
        request.state["pool"],
        email_prefix=admin.parse_email_prefix(params.get("email")),
        cursor=params.get("cursor"),
        limit=pagination.page_size(params.get("limit")),
    )
    return _json({"users": [user.to_json() for user in page], "next_cursor": next_cursor})


async def get_user(request: Request[AppState]) -> Response:
    """GET /admin/users/{user_id}: the user with roles, state and live session count."""
    await _actor(request)
    state = request.state
    found = await admin.get_user(state["pool"], _user_id(request), state["clock"]())
    return _json(found.to_json())


async def disable_user(request: Request[AppState]) -> Response:
    """POST /admin/users/{user_id}/disable: 204; every session of the user ends now."""
    return await _set_disabled(request, disabled=True)


async def enable_user(request: Request[AppState]) -> Response:
    """POST /admin/users/{user_id}/enable: 204."""
    return await _set_disabled(request, disabled=False)


async def _set_disabled(request: Request[AppState], *, disabled: bool) -> Response:
    actor = await _actor(request)
    state = request.state
    await admin.set_disabled(
        state["pool"], _user_id(request), disabled=disabled, actor=actor, now=state["clock"]()
    )
    return Response(status_code=204)


async def put_user_roles(request: Request[AppState]) -> Response:
    """PUT /admin/users/{user_id}/roles {"roles": [...]}: 200 the user; 422 an unknown role."""
    actor = await _actor(request)
    state = request.state
    user_id = _user_id(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    if set(body) != {"roles"}:
        raise InvalidInput('The body is {"roles": [role names]}.')
    names = roles.check_role_names(body["roles"])
    found = await admin.set_roles(state["pool"], user_id, names, actor=actor, now=state["clock"]())
    return _json(found.to_json())


async def list_user_sessions(request: Request[AppState]) -> Response:
    """GET /admin/users/{user_id}/sessions: the user's live sessions."""
    await _actor(request)
    state = request.state
    found = await admin.list_sessions(state["pool"], _user_id(request), state["clock"]())
    return _json({"sessions": [session.to_json() for session in found]})


async def revoke_user_sessions(request: Request[AppState]) -> Response:
    """DELETE /admin/users/{user_id}/sessions: 204 once every session of the user is revoked."""
    actor = await _actor(request)
    state = request.state
    await admin.revoke_sessions(state["pool"], _user_id(request), actor=actor, now=state["clock"]())
    return Response(status_code=204)


async def revoke_user_session(request: Request[AppState]) -> Response:
    """DELETE /admin/users/{user_id}/sessions/{session_id}: 204 once that session is revoked."""
    actor = await _actor(request)
    state = request.state
    session_id = path_uuid(request, "session_id", "No such session.")
    await admin.revoke_session(
        state["pool"], _user_id(request), session_id, actor=actor, now=state["clock"]()
    )
    return Response(status_code=204)


async def erase_user(request: Request[AppState]) -> Response:
    """DELETE /admin/users/{user_id}: 204; the user and all that references them are gone."""
    actor = await _actor(request)
    state = request.state
    await admin.erase_user(state["pool"], _user_id(request), actor=actor, now=state["clock"]())
    return Response(status_code=204)


async def list_roles(request: Request[AppState]) -> Response:
    """GET /admin/roles: every role with its scopes."""
    await _actor(request)
    found = await admin.list_roles(request.state["pool"])
    return _json({"roles": [role.to_json() for role in found]})


async def list_user_factors(request: Request[AppState]) -> Response:
    """GET /admin/users/{user_id}/factors: the user's live second factors."""
    await _actor(request)
    found = await admin.list_factors(request.state["pool"], _user_id(request))
    return _json({"factors": [factor.to_json() for factor in found]})


async def remove_user_factor(request: Request[AppState]) -> Response:
    """DELETE /admin/users/{user_id}/factors/{factor_id}: 204; every session of the user is
    revoked."""
    actor = await _actor(request)
    state = request.state
    factor_id = path_uuid(request, "factor_id", "No such factor.")
    await admin.remove_factor(
        state["pool"], _user_id(request), factor_id, actor=actor, now=state["clock"]()
    )
    return Response(status_code=204)


async def put_role(request: Request[AppState]) -> Response:
    """PUT /admin/roles/{name} {"scopes": [...], "require_mfa"?: bool}: 200 the role (201 when
    new)."""
    actor = await _actor(request)
    state = request.state
    name = request.path_params["name"]
    body = await read_json(request, state["settings"].max_body_bytes)
    roles.check_role_name(name)
    if "scopes" not in body or not set(body) <= {"scopes", "require_mfa"}:
        raise InvalidInput('The body is {"scopes": [scope tokens], "require_mfa"?: bool}.')
    scopes = roles.check_scopes(body["scopes"])
    role, created = await admin.put_role(
        state["pool"],
        name,
        scopes,
        actor=actor,
        now=state["clock"](),
        require_mfa=boolean_field(body, "require_mfa"),
    )
    return _json(role.to_json(), status_code=201 if created else 200)


async def delete_role(request: Request[AppState]) -> Response:
    """DELETE /admin/roles/{name}: 204; 409 while a user holds it."""
    actor = await _actor(request)
    state = request.state
    await admin.delete_role(state["pool"], _role_name(request), actor=actor, now=state["clock"]())
    return Response(status_code=204)


async def list_audit(request: Request[AppState]) -> Response:
    """GET /admin/audit?cursor=&limit=&user_id=&actor=&action=&after=&before=: a page of the
    audit log, newest first."""
    await _actor(request)
    params = request.query_params
    user_id = None
    if params.get("user_id") is not None:
        try:
            user_id = UUID(params["user_id"])
        except ValueError:
            raise InvalidInput("'user_id' must be a user's id.") from None
    page, next_cursor = await admin.list_audit(
        request.state["pool"],
        user_id=user_id,
        cursor=params.get("cursor"),
        limit=pagination.page_size(params.get("limit")),
        narrowed=audit_filters.parse(params),
    )
    return _json({"events": [event.to_json() for event in page], "next_cursor": next_cursor})


async def list_resources(request: Request[AppState]) -> Response:
    """GET /admin/resources: every resource, by URI."""
    await _actor(request)
    found = await resources.list_resources(request.state["pool"])
    return _json({"resources": [resource.to_json() for resource in found]})


async def create_resource(request: Request[AppState]) -> Response:
    """POST /admin/resources {uri, name, scopes, access_token_ttl?}: 201 the resource."""
    actor = await _actor(request)
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    fields = resources.check_resource_fields(body, state["settings"], creating=True)
    created = await resources.create_resource(
        state["pool"], fields, actor=actor, now=state["clock"]()
    )
    return _json(created.to_json(), status_code=201)


async def get_resource(request: Request[AppState]) -> Response:
    """GET /admin/resources/{resource_id}: one resource."""
    await _actor(request)
    found = await resources.get_resource(request.state["pool"], _resource_id(request))
    return _json(found.to_json())


async def update_resource(request: Request[AppState]) -> Response:
    """PATCH /admin/resources/{resource_id} {name?, scopes?, access_token_ttl?}: 200."""
    actor = await _actor(request)
    state = request.state
    resource_id = _resource_id(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    fields = resources.check_resource_fields(body, state["settings"], creating=False)
    updated = await resources.update_resource(
        state["pool"], resource_id, fields, actor=actor, now=state["clock"]()
    )
    return _json(updated.to_json())


async def delete_resource(request: Request[AppState]) -> Response:
    """DELETE /admin/resources/{resource_id}: 204; clients' grants to it go with it."""
    actor = await _actor(request)
    state = request.state
    await resources.delete_resource(
        state["pool"], _resource_id(request), actor=actor, now=state["clock"]()
    )
    return Response(status_code=204)


routes = [
    Route("/admin/users", list_users, methods=["GET"]),
    Route("/admin/users/{user_id}", get_user, methods=["GET"]),
    Route("/admin/users/{user_id}", erase_user, methods=["DELETE"]),
    Route("/admin/users/{user_id}/disable", disable_user, methods=["POST"]),
    Route("/admin/users/{user_id}/enable", enable_user, methods=["POST"]),
    Route("/admin/users/{user_id}/roles", put_user_roles, methods=["PUT"]),
    Route("/admin/users/{user_id}/sessions", list_user_sessions, methods=["GET"]),
    Route("/admin/users/{user_id}/sessions", revoke_user_sessions, methods=["DELETE"]),
    Route("/admin/users/{user_id}/sessions/{session_id}", revoke_user_session, methods=["DELETE"]),
    Route("/admin/users/{user_id}/factors", list_user_factors, methods=["GET"]),
    Route("/admin/users/{user_id}/factors/{factor_id}", remove_user_factor, methods=["DELETE"]),
    Route("/admin/roles", list_roles, methods=["GET"]),
    Route("/admin/roles/{name}", put_role, methods=["PUT"]),
    Route("/admin/roles/{name}", delete_role, methods=["DELETE"]),
    Route("/admin/resources", list_resources, methods=["GET"]),
    Route("/admin/resources", create_resource, methods=["POST"]),
    Route("/admin/resources/{resource_id}", get_resource, methods=["GET"]),
    Route("/admin/resources/{resource_id}", update_resource, methods=["PATCH"]),
    Route("/admin/resources/{resource_id}", delete_resource, methods=["DELETE"]),
    Route("/admin/audit", list_audit, methods=["GET"]),
]
