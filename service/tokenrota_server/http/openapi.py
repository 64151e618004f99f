"""`GET /openapi.json`, built from the routes the app serves, and `GET /docs` (Swagger UI).

The document lists exactly the served routes: each path and method comes from the router, its
description from `tokenrota_server.http.openapi_operations`. `undescribed_routes` names any served
route without a description; the tests require it to be empty, so the document cannot drift from
the code. Swagger UI's files come from the `swagger-ui-bundle-v2` wheel: the page makes no
outside request.
"""

from __future__ import annotations

import html
import re
from importlib import metadata
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tokenrota_server.http.openapi_operations import (
    NEW_PASSWORD,
    OPERATIONS,
    SESSION_PROPERTIES,
    SESSION_REQUIRED,
)

OPENAPI_VERSION = "3.1.0"
DOCS_ASSETS = "/docs/assets"
_PATH_PARAMETER = re.compile(r"{([^}:]+)}")

_string = {"type": "string"}
# RFC 6749 §3.3: scope-tokens joined by single spaces (db/oauth_clients.py).
_SCOPE = {
    "type": "string",
    "pattern": "^[\\x21\\x23-\\x5b\\x5d-\\x7e]+( [\\x21\\x23-\\x5b\\x5d-\\x7e]+)*$",
}
_NON_EMPTY = {"type": "string", "minLength": 1}
_user = {
    "type": "object",
    "required": ["id", "email", "created_at", "email_verified"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "email": _string,
        "created_at": {"type": "string", "format": "date-time"},
        "email_verified": {"type": "boolean"},
    },
}
_MAILBOX = (
    "One mailbox, local@domain: a dot-atom local part, kept as given, and a domain that passes"
    " IDNA, stored as lower-case A-labels; no display name, comment, quotes, list or encoded word."
)
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "error_description"],
        "properties": {"error": _string, "error_description": _string},
    },
    "Credentials": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": {
                "type": "string",
                "format": "email",
                "maxLength": 254,
                "description": _MAILBOX,
                "examples": ["ada@example.com"],
            },
            "password": {"type": "string", "minLength": 8, "maxLength": 128},
        },
    },
    "Login": {
        "allOf": [
            {"$ref": "#/components/schemas/Credentials"},
            {
                "properties": {
                    "use_cookie": {"type": "boolean", "default": False},
                    # false: a short session (SESSION_SHORT_MAX_AGE), a cookie without Max-Age.
                    "remember": {"type": "boolean", "default": True},
                    "resource": {"$ref": "#/components/schemas/Resource"},
                }
            },
        ]
    },
    "RefreshRequest": {
        "type": "object",
        "properties": {
            "refresh_token": _string,
            "resource": {"$ref": "#/components/schemas/Resource"},
        },
    },
    "Resource": {
        "type": "string",
        "maxLength": 512,
        "description": "RFC 8707: one registered resource's absolute URI, without a fragment;"
        " the access token is for it alone (aud) with the scopes it defines. Absent: the"
        " service itself. ADMIN_AUDIENCE: the admin API (an operator's token, scope admin).",
    },
    "PasswordChange": {
        "type": "object",
        "required": ["current_password", "new_password"],
        "properties": {"current_password": _string, "new_password": NEW_PASSWORD},
    },
    "UserEnvelope": {"type": "object", "required": ["user"], "properties": {"user": _user}},
    "TokenPair": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "refresh_expires_in"],
        "properties": {
            "access_token": _string,
            "token_type": {"type": "string", "enum": ["Bearer", "DPoP"]},
            "expires_in": {"type": "integer", "minimum": 0},
            "refresh_token": {"type": "string", "description": "Absent in cookie mode."},
            "refresh_expires_in": {"type": "integer", "minimum": 0},
        },
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions"],
        "properties": {
            "sessions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [*SESSION_REQUIRED, "current"],
                    "properties": {**SESSION_PROPERTIES, "current": {"type": "boolean"}},
                },
            }
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {
                "type": "string",
                "enum": [
                    "client_credentials",
                    "refresh_token",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ],
            },
            "scope": _SCOPE,
            "refresh_token": _NON_EMPTY,
            "resource": {"$ref": "#/components/schemas/Resource"},
            "subject_token": {
                **_NON_EMPTY,
                "description": "Token exchange: a user's access token"
                " whose aud is a resource the calling client serves.",
            },
            "subject_token_type": {
                "const": "urn:ietf:params:oauth:token-type:access_token",
            },
            "requested_token_type": {
                "const": "urn:ietf:params:oauth:token-type:access_token",
            },
            "client_id": _string,
            "client_secret": _string,
        },
    },
    "OAuthTokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": _string,
            # DPoP when a client_credentials request carried a proof (RFC 9449 §5).
            "token_type": {"type": "string", "enum": ["Bearer", "DPoP"]},
            "expires_in": {"type": "integer"},
            "scope": _string,
            "refresh_token": _string,
            # RFC 8693 §2.2.1: in answer to a token exchange.
            "issued_token_type": _string,
        },
    },
    "TokenReference": {
        "type": "object",
        "required": ["token"],
        "properties": {"token": _NON_EMPTY, "token_type_hint": _string},
    },
    "Introspection": {
        "type": "object",
        "required": ["active"],
        "properties": {
            "active": {"type": "boolean"},
            "aud": _string,
            "act": {"type": "object", "description": "RFC 8693 §4.1: who acted, nested."},
        },
    },
    "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": _string}},
    "Ready": {
        "type": "object",
        "required": ["status", "revision"],
        "properties": {"status": {"const": "ready"}, "revision": _string},
    },
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (typ at+jwt)"},
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT (typ at+jwt)",
        "description": "A client-credentials token with the `admin` scope, or an operator's:"
        " a person's token for the admin API's audience (ADMIN_AUDIENCE) with `admin` from a"
        " role, `acr` aal2 and `auth_time` within ADMIN_MAX_AUTH_AGE.",
    },
    "refreshCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "__Host-refresh_token",
        "description": "Cookie transport for browsers (refresh_token without `__Host-` "
        "when COOKIE_SECURE=false).",
    },
    "clientBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "client_id:client_secret (RFC 6749 §2.3.1). The alternative, "
        "`client_id` and `client_secret` as form fields, has no OpenAPI scheme.",
    },
}


def served_operations(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every route the router serves; HEAD rides along with GET."""
    served = []
    for route in routes:
        if isinstance(route, Route) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    served.append((method, route.path_format))
    return served


def undescribed_routes(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """Served (method, path) pairs that `OPERATIONS` does not describe."""
    return [key for key in served_operations(routes) if key not in OPERATIONS]


def build_document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of the served routes that have a description."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in served_operations(routes):
        description = OPERATIONS.get((method, path))
        if description is None:
            continue
        operation = {"operationId": _operation_id(method, path), **description}
        operation.setdefault("security", [])
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAMETER.findall(path)
        ]
        if parameters:
            operation["parameters"] = [*parameters, *operation.get("parameters", [])]
        operation["responses"] = {
            str(status): body for status, body in operation["responses"].items()
        }
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Token service",
            # The package's own version: one number, set in pyproject.toml only.
            "version": metadata.version("tokenrota"),
            "description": "Short-lived access tokens, rotating refresh tokens, sessions, and "
            "OAuth 2.0 for services. Every error is `{error, error_description}`.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    return f"{method.lower()}_{words}"


async def openapi_json(request: Request[Any]) -> Response:
    return JSONResponse(build_document(request.app.routes))


async def docs(request: Request[Any]) -> Response:
    """Swagger UI, pointed at /openapi.json, with its assets served from the wheel."""
    assets = html.escape(DOCS_ASSETS)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Token service API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/docs-init.js"></script>
</body></html>"""
    return HTMLResponse(page)


async def docs_init(request: Request[Any]) -> Response:
    # A file of its own rather than an inline script, so a strict CSP (script-src 'self') holds.
    script = 'SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});\n'
    return Response(script, media_type="text/javascript")


def routes(*, with_docs: bool) -> list[BaseRoute]:
    """The /openapi.json route, and the /docs page with its assets when `with_docs`."""
    served: list[BaseRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
    if with_docs:
        from swagger_ui_bundle import swagger_ui_path

        served += [
            Route("/docs", docs, methods=["GET"]),
            Route(
                f"{DOCS_ASSETS}/docs-init.js", docs_init, methods=["GET"], include_in_schema=False
            ),
            Mount(DOCS_ASSETS, app=StaticFiles(directory=str(swagger_ui_path)), name="docs-assets"),
        ]
    return served
