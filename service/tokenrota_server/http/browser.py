"""Static files for browser frontends: the JS client at /auth-client.js, and the demo page.

The files ship inside the package (tokenrota_server/static/), so an installed service serves
them. The demo (/demo and its script and style) is for trying the flow locally and is off in
production.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenrota_server.errors import NotFound
from tokenrota_server.state import AppState

# The demo page loads only its own files: no inline script, nothing from elsewhere.
DEMO_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@cache
def static_file(name: str) -> bytes:
    """The bytes of a file shipped in tokenrota_server/static/, read once."""
    return resources.files("tokenrota_server").joinpath("static", name).read_bytes()


def _serve(name: str, *, demo: bool) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if demo:
        headers["Content-Security-Policy"] = DEMO_POLICY
    media_type = MEDIA_TYPES[name[name.rindex(".") :]]
    return Response(static_file(name), media_type=media_type, headers=headers)


async def auth_client(request: Request[AppState]) -> Response:
    # Served to every origin's pages as a module script; it holds no secret.
    response = _serve("auth-client.js", demo=False)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def demo(request: Request[AppState]) -> Response:
    if request.state["settings"].is_production:
        raise NotFound()
    name = {"/demo": "demo.html", "/demo.js": "demo.js", "/demo.css": "demo.css"}[request.url.path]
    return _serve(name, demo=True)


routes = [
    Route("/auth-client.js", auth_client, methods=["GET"]),
    Route("/demo", demo, methods=["GET"]),
    Route("/demo.js", demo, methods=["GET"]),
    Route("/demo.css", demo, methods=["GET"]),
]
