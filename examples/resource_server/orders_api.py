"""A tiny resource server: an orders API that trusts the token service's access tokens.

It never calls the token service: `tokenrota.verify` checks each bearer token itself, with what
the service publishes for resource servers (issuer, audience, the access-token key), and the
handlers read the caller and their scopes from the verified claims. `protect` fails closed:
every route needs a valid token except the ones listed as public.

    GET /healthz    public                                    {"ok": true}
    GET /orders     a person's access token (from /login)     their own orders
    POST /orders    any token with the scope orders:write     place an order for a user (201)
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.bearer import refusal
from tokenrota.errors import InsufficientScope
from tokenrota.verify import TokenVerifier, protect, requires_scope, token_claims


def create_app(verifier: TokenVerifier) -> Starlette:
    """The orders API, checking tokens with `verifier`."""
    orders: dict[str, list[dict[str, object]]] = {}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def list_orders(request: Request) -> Response:
        claims = token_claims(request)
        if claims.session_id is None:
            # A service's token names no person whose orders these would be.
            return refusal(InsufficientScope(()))
        return JSONResponse({"user_id": claims.subject, "orders": orders.get(claims.subject, [])})

    @requires_scope("orders:write")
    async def place_order(request: Request) -> Response:
        claims = token_claims(request)
        body = await request.json()
        order = {"item": str(body["item"]), "placed_by": claims.client_id or claims.subject}
        orders.setdefault(str(body["user_id"]), []).append(order)
        return JSONResponse(order, status_code=201)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders", place_order, methods=["POST"]),
        ],
        middleware=[protect(verifier, public=["/healthz"])],
    )
