"""A tiny resource server: an orders API that trusts the token service's access tokens.

It never calls the token service: it checks each bearer token itself, with what the service
publishes for resource servers (issuer, audience, algorithm and the access-token key), and reads
the caller and their scopes from the verified claims.

    GET /orders     a person's access token (from /login)     their own orders
    POST /orders    any token with the scope orders:write     place an order for a user (201)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.claims import AccessClaims
from tokenrota.testing import VerifierSettings
from tokenrota.verify import TokenVerifier
from tokenrota_server.errors import InvalidToken

# Checks a bearer token; raises InvalidToken (TokenExpired included) when it is refused.
Verify = Callable[[str], Awaitable[AccessClaims]]


def access_token_verifier(verifier: VerifierSettings) -> Verify:
    """A function that checks an access token the way the token service does.

    `tokenrota.verify.TokenVerifier` applies the service's own checks (pinned algorithm,
    typ at+jwt, iss, aud, exp and iat with leeway, a bounded lifetime) without calling it.
    """
    if verifier.access_token_secret is None:
        raise ValueError("this example verifies HS256 tokens: it needs the access-token secret")
    return TokenVerifier(
        issuer=verifier.issuer,
        audience=verifier.audience,
        secret=str(verifier.access_token_secret),
        leeway=verifier.leeway,
        max_lifetime=verifier.max_lifetime,
    ).verify


def create_app(verify: Verify) -> Starlette:
    """The orders API, checking tokens with `verify`."""
    orders: dict[str, list[dict[str, object]]] = {}

    async def authorize(request: Request, scope: str | None) -> AccessClaims | Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "missing_token", 'Bearer realm="orders"')
        try:
            claims = await verify(token)
        except InvalidToken:
            return _error(401, "invalid_token", 'Bearer error="invalid_token"')
        if scope is not None and scope not in claims.scope.split():
            # RFC 6750 §3.1: a valid token without the needed scope is 403 insufficient_scope.
            return _error(
                403, "insufficient_scope", f'Bearer error="insufficient_scope" scope="{scope}"'
            )
        return claims

    async def list_orders(request: Request) -> Response:
        claims = await authorize(request, None)
        if isinstance(claims, Response):
            return claims
        if claims.session_id is None:
            # A service's token names no person whose orders these would be.
            return _error(403, "insufficient_scope", 'Bearer error="insufficient_scope"')
        return JSONResponse({"user_id": claims.subject, "orders": orders.get(claims.subject, [])})

    async def place_order(request: Request) -> Response:
        claims = await authorize(request, "orders:write")
        if isinstance(claims, Response):
            return claims
        body = await request.json()
        order = {"item": str(body["item"]), "placed_by": claims.client_id or claims.subject}
        orders.setdefault(str(body["user_id"]), []).append(order)
        return JSONResponse(order, status_code=201)

    return Starlette(
        routes=[
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders", place_order, methods=["POST"]),
        ]
    )


def _error(status: int, code: str, challenge: str) -> Response:
    return JSONResponse(
        {"error": code, "error_description": code.replace("_", " ")},
        status_code=status,
        headers={"WWW-Authenticate": challenge},
    )
