"""The refresh token in a cookie, for browser frontends, and the CSRF defence it needs.

A cookie is sent by the browser on its own, so a request that carries one may have been forged
by another site. Before a cookie's token is used, `/refresh` and `/logout` check, without
touching the database: the body is JSON or empty (a form or text/plain body is how a cross-site
`<form>` or a "simple" fetch posts), `Origin` is one of `ALLOWED_ORIGINS`, the custom header
`X-Requested-With` is present (no cross-site request can add one without a CORS preflight, which
only allowed origins pass), and `Sec-Fetch-Site` is not `cross-site`. A token in the body needs
none of this: another site cannot know it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokenrota_server.auth import TokenPair
from tokenrota_server.config import Settings
from tokenrota_server.errors import CsrfFailed, InvalidInput, MissingToken
from tokenrota_server.http.web import has_body, media_type, read_json, token_response

SECURE_COOKIE_NAME = "__Host-refresh_token"  # the prefix makes browsers demand Secure, Path=/
PLAIN_COOKIE_NAME = "refresh_token"  # COOKIE_SECURE=false: plain-http local development only


def cookie_name(settings: Settings) -> str:
    return SECURE_COOKIE_NAME if settings.cookie_secure else PLAIN_COOKIE_NAME


async def presented_refresh_token(
    request: Request[Any], settings: Settings
) -> tuple[str, bool, dict[str, Any]]:
    """The refresh token of a /refresh or /logout request, whether it came from the cookie, and
    the JSON body (`{}` without one) for the request's other fields.

    The body's `refresh_token` wins; without one, the cookie is used once the CSRF checks pass.
    Raises `CsrfFailed`, `MissingToken`, or the body errors of `read_json`.
    """
    cookie = request.cookies.get(cookie_name(settings))
    if cookie:
        _check_body_type(request)
    body = await read_json(request, settings.max_body_bytes, allow_empty=True)
    token = body.get("refresh_token")
    if token is not None and token != "":
        if not isinstance(token, str):
            raise InvalidInput("'refresh_token' must be a string.")
        return token, False, body
    if not cookie:
        raise MissingToken()
    check_csrf(request, settings)
    return cookie, True, body


def check_csrf(request: Request[Any], settings: Settings) -> None:
    """Raise `CsrfFailed` unless the request comes from an allowed origin's own script."""
    origin = request.headers.get("origin")
    if origin is None or origin not in settings.allowed_origins:
        raise CsrfFailed()
    if not request.headers.get("x-requested-with"):
        raise CsrfFailed()
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise CsrfFailed()


def pair_response(pair: TokenPair, settings: Settings, *, in_cookie: bool) -> Response:
    """The token pair; with `in_cookie`, the refresh token goes in the cookie, not the body."""
    if not in_cookie:
        return token_response(pair.to_json())
    body = pair.to_json()
    del body["refresh_token"]
    response = token_response(body)
    response.set_cookie(
        cookie_name(settings),
        pair.refresh_token,
        # A short session's cookie is a browser-session cookie: no Max-Age, no Expires.
        max_age=pair.refresh_expires_in if pair.remember else None,
        path="/",
        domain=None,
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


def clear_refresh_cookie(response: Response, settings: Settings) -> Response:
    """Tell the browser to drop the refresh cookie (same name, path and flags, Max-Age=0)."""
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


def _check_body_type(request: Request[Any]) -> None:
    if has_body(request) and media_type(request) != "application/json":
        raise CsrfFailed()
