"""The operators' console at /console: a page of plain ES modules on the admin API.

Its files ship inside the package (tokenrota_server/static/console/) and are served under a
strict Content Security Policy: the page loads only its own scripts and styles, never inline
ones, talks only to this origin, and may not be framed. The console holds no secret of its
own; it signs the operator in like any person and calls the admin API with that token, which
decides what is allowed. `/console/config.json` tells the page which audience to ask for.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrota_server.db.audit import AuditAction
from tokenrota_server.errors import NotFound
from tokenrota_server.state import AppState

# No inline script or style, nothing from elsewhere, no framing, no plugins, no <base>.
CONSOLE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def security_headers() -> dict[str, str]:
    """The headers of every /console answer: the CSP, no framing, no sniffing, no referrer."""
    return {
        "Content-Security-Policy": CONSOLE_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


@cache
def assets() -> dict[str, bytes]:
    """The console's files by name (index.html, its modules and its style), read once."""
    folder = resources.files("tokenrota_server").joinpath("static", "console")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


async def page(request: Request[AppState]) -> Response:
    return Response(
        assets()["index.html"], media_type="text/html; charset=utf-8", headers=security_headers()
    )


async def asset(request: Request[AppState]) -> Response:
    name = request.path_params["name"]
    media_type = MEDIA_TYPES.get(name[name.rfind(".") :]) if "." in name else None
    content = assets().get(name)
    if media_type is None or content is None:
        raise NotFound()
    return Response(content, media_type=media_type, headers=security_headers())


async def config(request: Request[AppState]) -> Response:
    """What the page needs before signing in: the audience of the admin API's tokens, and the
    audit log's actions (its filter offers them; from the one list, so they never drift)."""
    body = {
        "admin_audience": request.state["settings"].admin_api_audience,
        "audit_actions": sorted(action.value for action in AuditAction),
    }
    return JSONResponse(body, headers=security_headers())


routes = [
    Route("/console", page, methods=["GET"]),
    Route("/console/config.json", config, methods=["GET"]),
    Route("/console/{name}", asset, methods=["GET"]),
]
