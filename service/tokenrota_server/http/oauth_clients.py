"""HTTP handlers of OAuth clients in the admin API: /admin/clients. The same callers as the
rest of the admin API (`http/admin.py`), checked first, before a path or body is read.

Bodies (docs/admin.md): POST `{name, scopes?, dpop_bound_access_tokens?}`; PATCH `{name?,
scopes?, disabled?, dpop_bound_access_tokens?}` (at least one); POST .../secret
`{grace_seconds?}` or no body; PUT .../grants/{resource_id}/{kind} `{scopes?}` or no body. Any
other key is 422. A secret is in the answer that made it, and nowhere else.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server import oauth_clients, resources
from tokenrota_server.db import oauth_clients as client_rows
from tokenrota_server.db import pagination, roles
from tokenrota_server.db.oauth_clients import ManagedClient
from tokenrota_server.db.resources import GrantKind
from tokenrota_server.errors import InvalidInput, NotFound
from tokenrota_server.http.admin import admin_actor
from tokenrota_server.http.web import NO_STORE, read_json
from tokenrota_server.state import AppState


def _client_id(request: Request[AppState]) -> str:
    client_id: str = request.path_params["client_id"]
    if not client_rows.is_plausible_client_id(client_id):
        raise NotFound("No client has this id.")
    return client_id


def _grant_target(request: Request[AppState]) -> tuple[UUID, GrantKind]:
    """The grant's resource id and kind from the path; an id or kind that cannot exist is
    just not found."""
    try:
        return UUID(request.path_params["resource_id"]), GrantKind(request.path_params["kind"])
    except ValueError:
        raise NotFound("No such resource, or no such kind of grant.") from None


def _optional_boolean(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false.")
    return value


def _fields(body: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown or not required <= set(body):
        raise InvalidInput(
            "The body takes " + ", ".join(f"'{key}'" for key in sorted(allowed)) + "."
        )


def _render(
    request: Request[AppState], client: ManagedClient, secret: str | None = None, status: int = 200
) -> JSONResponse:
    body = client.to_json(request.state["clock"]())
    if secret is not None:
        body["client_secret"] = secret
    return JSONResponse(body, status_code=status, headers=NO_STORE)


async def list_clients(request: Request[AppState]) -> Response:
    """GET /admin/clients?cursor=&limit=: a page of clients, oldest first; never a secret."""
    await admin_actor(request)
    params = request.query_params
    page, next_cursor = await oauth_clients.list_clients(
        request.state["pool"],
        cursor=params.get("cursor"),
        limit=pagination.page_size(params.get("limit")),
    )
    now = request.state["clock"]()
    return JSONResponse(
        {"clients": [client.to_json(now) for client in page], "next_cursor": next_cursor},
        headers=NO_STORE,
    )


async def create_client(request: Request[AppState]) -> Response:
    """POST /admin/clients {name, scopes?, dpop_bound_access_tokens?}: 201 the client with its
    secret, shown this once."""
    actor = await admin_actor(request)
    state = request.state
    body = await read_json(request, state["settings"].max_body_bytes)
    _fields(body, {"name", "scopes", "dpop_bound_access_tokens"}, {"name"})
    name = oauth_clients.check_name(body["name"])
    scopes = roles.check_scopes(body.get("scopes", []))
    dpop = _optional_boolean(body, "dpop_bound_access_tokens")
    client, secret = await oauth_clients.create_client(
        state["pool"],
        state["passwords"],
        name=name,
        scopes=scopes,
        actor=actor,
        now=state["clock"](),
        dpop_bound_access_tokens=bool(dpop),
    )
    return _render(request, client, secret, status=201)


async def get_client(request: Request[AppState]) -> Response:
    """GET /admin/clients/{client_id}: the client; never its secret."""
    await admin_actor(request)
    found = await oauth_clients.get_client(request.state["pool"], _client_id(request))
    return _render(request, found)


async def update_client(request: Request[AppState]) -> Response:
    """PATCH /admin/clients/{client_id} {name?, scopes?, disabled?, dpop_bound_access_tokens?}:
    200 the client."""
    actor = await admin_actor(request)
    state = request.state
    client_id = _client_id(request)
    body = await read_json(request, state["settings"].max_body_bytes)
    _fields(body, {"name", "scopes", "disabled", "dpop_bound_access_tokens"}, set())
    if not body:
        raise InvalidInput(
            "Give at least one of 'name', 'scopes', 'disabled', 'dpop_bound_access_tokens'."
        )
    updated, _ = await oauth_clients.update_client(
        state["pool"],
        client_id,
        name=oauth_clients.check_name(body["name"]) if "name" in body else None,
        scopes=roles.check_scopes(body["scopes"]) if "scopes" in body else None,
        disabled=_optional_boolean(body, "disabled"),
        dpop_bound_access_tokens=_optional_boolean(body, "dpop_bound_access_tokens"),
        actor=actor,
        now=state["clock"](),
    )
    return _render(request, updated)


async def delete_client(request: Request[AppState]) -> Response:
    """DELETE /admin/clients/{client_id}: 204; its tokens are refused from now on."""
    actor = await admin_actor(request)
    state = request.state
    await oauth_clients.delete_client(
        state["pool"], _client_id(request), actor=actor, now=state["clock"]()
    )
    return Response(status_code=204)


async def rotate_secret(request: Request[AppState]) -> Response:
    """POST /admin/clients/{client_id}/secret {grace_seconds?}: 200 the client with its new
    secret, shown this once; the old one works `grace_seconds` more (default 0)."""
    actor = await admin_actor(request)
    state = request.state
    client_id = _client_id(request)
    body = await read_json(request, state["settings"].max_body_bytes, allow_empty=True)
    _fields(body, {"grace_seconds"}, set())
    grace = oauth_clients.check_grace(body.get("grace_seconds", oauth_clients.DEFAULT_SECRET_GRACE))
    rotated, secret = await oauth_clients.rotate_secret(
        state["pool"],
        state["passwords"],
        client_id,
        grace_seconds=grace,
        actor=actor,
        now=state["clock"](),
    )
    return _render(request, rotated, secret)


async def list_grants(request: Request[AppState]) -> Response:
    """GET /admin/clients/{client_id}/grants: the client's grants to resources."""
    await admin_actor(request)
    found = await resources.list_client_grants(request.state["pool"], _client_id(request))
    return JSONResponse({"grants": [grant.to_json() for grant in found]}, headers=NO_STORE)


async def put_grant(request: Request[AppState]) -> Response:
    """PUT /admin/clients/{client_id}/grants/{resource_id}/{kind} {scopes?}: 200 the grant,
    new or with its scopes replaced."""
    actor = await admin_actor(request)
    state = request.state
    client_id = _client_id(request)
    resource_id, kind = _grant_target(request)
    body = await read_json(request, state["settings"].max_body_bytes, allow_empty=True)
    _fields(body, {"scopes"}, set())
    granted = await resources.grant_client(
        state["pool"],
        client_id=client_id,
        resource=resource_id,
        kind=kind,
        scopes=roles.check_scopes(body.get("scopes", [])),
        actor=actor,
        now=state["clock"](),
    )
    return JSONResponse(granted.to_json(), headers=NO_STORE)


async def delete_grant(request: Request[AppState]) -> Response:
    """DELETE /admin/clients/{client_id}/grants/{resource_id}/{kind}: 204."""
    actor = await admin_actor(request)
    state = request.state
    client_id = _client_id(request)
    resource_id, kind = _grant_target(request)
    await resources.revoke_client_grant(
        state["pool"],
        client_id=client_id,
        resource=resource_id,
        kind=kind,
        actor=actor,
        now=state["clock"](),
    )
    return Response(status_code=204)


routes = [
    Route("/admin/clients", list_clients, methods=["GET"]),
    Route("/admin/clients", create_client, methods=["POST"]),
    Route("/admin/clients/{client_id}", get_client, methods=["GET"]),
    Route("/admin/clients/{client_id}", update_client, methods=["PATCH"]),
    Route("/admin/clients/{client_id}", delete_client, methods=["DELETE"]),
    Route("/admin/clients/{client_id}/secret", rotate_secret, methods=["POST"]),
    Route("/admin/clients/{client_id}/grants", list_grants, methods=["GET"]),
    Route("/admin/clients/{client_id}/grants/{resource_id}/{kind}", put_grant, methods=["PUT"]),
    Route(
        "/admin/clients/{client_id}/grants/{resource_id}/{kind}", delete_grant, methods=["DELETE"]
    ),
]
