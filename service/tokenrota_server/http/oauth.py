"""OAuth 2.0 HTTP handlers: /oauth/token, /oauth/revoke, /oauth/introspect, and discovery.

Bodies are application/x-www-form-urlencoded (RFC 6749 §3.2), read here with a size cap and
strict parsing rather than through `request.form()` (which needs python-multipart and accepts
anything). Every answer is JSON, never cached; errors are RFC 6749 §5.2's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.dpop import ALGORITHMS

from tokenrota_server import telemetry
from tokenrota_server.db.oauth_clients import Client
from tokenrota_server.db.resources import GrantKind
from tokenrota_server.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    MalformedRequest,
    NotFound,
    UnsupportedGrantType,
)
from tokenrota_server.http.remote_address import remote_address
from tokenrota_server.http.web import NO_STORE, media_type, read_body, token_response
from tokenrota_server.oauth import ACCESS_TOKEN_TYPE_URN, ClientSecret
from tokenrota_server.outcomes import Grant, RefreshOutcome
from tokenrota_server.resources import resolve_target
from tokenrota_server.state import AppState

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# Our requests carry at most six parameters; a flood of them is refused before building a dict.
MAX_FORM_FIELDS = 20
# RFC 8693 §2.1's grant type; counted as `Grant.TOKEN_EXCHANGE`.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
# The OAuth grants /oauth/token answers; /login issues the third kind of token.
GRANT_TYPES = (Grant.CLIENT_CREDENTIALS, Grant.REFRESH_TOKEN, TOKEN_EXCHANGE)


async def token(request: Request[AppState]) -> Response:
    """RFC 6749 §4.4 (client_credentials), §6 (refresh_token), RFC 8693 (token exchange);
    each takes RFC 8707's `resource`."""
    state = request.state
    form = await read_form(request, state["settings"].max_body_bytes)
    presented = client_secret_of(request, form)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise MalformedRequest("The 'grant_type' parameter is missing.")
    if grant_type not in GRANT_TYPES:
        # `password` among them: RFC 9700 §2.4 forbids it; people log in at /login.
        raise UnsupportedGrantType()
    oauth, pool, now = state["oauth"], state["pool"], state["clock"]()

    if grant_type == Grant.CLIENT_CREDENTIALS:
        if presented is None:
            raise InvalidClient()
        client = await oauth.authenticate(
            pool, presented, ip=remote_address(request, state["settings"]), now=now
        )
        # After the client is known, so a stranger's proofs are never recorded.
        proof = await state["proofs"].accept(
            pool, request.headers.getlist("dpop"), method="POST", path="/oauth/token", now=now
        )
        jkt = proof.jkt if proof is not None else None
        grant = await oauth.resource_grant(pool, client, form.get("resource"), GrantKind.TOKEN)
        return token_response(oauth.client_credentials(client, form.get("scope"), now, jkt, grant))

    if grant_type == TOKEN_EXCHANGE:
        return await _exchange(request, form, presented)

    # Every refusal of a refresh grant counts as an invalid refresh; success records its kind.
    telemetry.record(refresh=RefreshOutcome.INVALID)
    refresh_token = form.get("refresh_token")
    if refresh_token is None:
        raise MalformedRequest("The 'refresh_token' parameter is missing.")
    # User refresh tokens come from /login, issued to no client: a caller without client
    # credentials is the first-party frontend (a public client); one with them must pass.
    if presented is not None:
        await oauth.authenticate(
            pool, presented, ip=remote_address(request, state["settings"]), now=now
        )
    if form.get("scope") is not None:
        # A user's grant carries no scope, so any scope asked for exceeds it (RFC 6749 §6).
        raise InvalidScope("A refresh token grants no scope to ask for.")
    proof = state["proofs"].check(
        request.headers.getlist("dpop"), method="POST", path="/oauth/token", now=now
    )
    target = await resolve_target(pool, state["settings"], form.get("resource"))
    try:
        pair = await state["auth"].refresh(
            pool, refresh_token=refresh_token, now=now, proof=proof, target=target
        )
    except InvalidToken:
        raise InvalidGrant() from None
    return token_response(pair.to_json())


async def _exchange(
    request: Request[AppState], form: dict[str, str], presented: ClientSecret | None
) -> Response:
    """RFC 8693 §2: the authenticated client trades a user's token for itself for one toward
    `resource`. Only access tokens are exchanged, for access tokens, without `actor_token`."""
    state = request.state
    oauth, pool, now = state["oauth"], state["pool"], state["clock"]()
    if presented is None:
        raise InvalidClient()
    client = await oauth.authenticate(
        pool, presented, ip=remote_address(request, state["settings"]), now=now
    )
    for name in ("subject_token", "subject_token_type", "resource"):
        if name not in form:
            raise MalformedRequest(f"The '{name}' parameter is missing.")
    if (
        form["subject_token_type"] != ACCESS_TOKEN_TYPE_URN
        or form.get("requested_token_type", ACCESS_TOKEN_TYPE_URN) != ACCESS_TOKEN_TYPE_URN
    ):
        raise MalformedRequest("Only access tokens are exchanged, for access tokens.")
    if "actor_token" in form or "audience" in form:
        # An audience by name would bypass RFC 8707's URI; delegation needs no actor token.
        raise MalformedRequest("Use 'resource'; 'audience' and 'actor_token' are not supported.")
    proof = await state["proofs"].accept(
        pool, request.headers.getlist("dpop"), method="POST", path="/oauth/token", now=now
    )
    return token_response(
        await oauth.exchange(
            pool,
            client,
            subject_token=form["subject_token"],
            resource=form["resource"],
            requested_scope=form.get("scope"),
            now=now,
            jkt=proof.jkt if proof is not None else None,
        )
    )


async def revoke(request: Request[AppState]) -> Response:
    """RFC 7009: 200 whether or not the token was valid, known, or already revoked."""
    state = request.state
    client, revoked = await _client_and_token(request)
    await state["oauth"].revoke(state["pool"], state["auth"], client, revoked, state["clock"]())
    return Response(status_code=200, headers=NO_STORE)


async def introspect(request: Request[AppState]) -> Response:
    """RFC 7662: the token's claims if active, else exactly `{"active": false}`."""
    state = request.state
    _, examined = await _client_and_token(request)
    body = await state["oauth"].introspect(state["pool"], examined, state["clock"]())
    return JSONResponse(body, headers=NO_STORE)


async def metadata(request: Request[AppState]) -> Response:
    """RFC 8414 authorization server metadata."""
    settings = request.state["settings"]
    issuer = settings.token_issuer
    # Served with Cache-Control: public, so nothing in it may come from the request: a forged
    # Host header would otherwise poison a shared cache and send clients' secrets elsewhere.
    base = settings.public_base_url
    auth_methods = ["client_secret_basic", "client_secret_post"]
    body: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": f"{base}/oauth/token",
        "token_endpoint_auth_methods_supported": auth_methods,
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": [],
        "revocation_endpoint": f"{base}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint": f"{base}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "dpop_signing_alg_values_supported": list(ALGORITHMS),
    }
    if request.state["codec"].jwks() is not None:
        body["jwks_uri"] = f"{base}/.well-known/jwks.json"
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


async def jwks(request: Request[AppState]) -> Response:
    """RFC 7517: the public keys that verify access tokens; 404 while HS256 signs them."""
    key_set = request.state["codec"].jwks()
    if key_set is None:
        raise NotFound("Access tokens are signed with HS256.")
    # Short: verifiers refetch on an unknown kid anyway, and a rotated key must reach them.
    return JSONResponse(key_set, headers={"Cache-Control": "public, max-age=300"})


async def _client_and_token(request: Request[AppState]) -> tuple[Client, str]:
    """The authenticated client and the `token` parameter of a revocation or introspection.

    Both RFC 7009 §2.1 and RFC 7662 §2.1 require client authentication. It is checked first,
    so an unauthenticated caller gets `InvalidClient` whatever else is wrong with the request.
    """
    state = request.state
    form = await read_form(request, state["settings"].max_body_bytes)
    presented = client_secret_of(request, form)
    if presented is None:
        raise InvalidClient()
    client = await state["oauth"].authenticate(
        state["pool"],
        presented,
        ip=remote_address(request, state["settings"]),
        now=state["clock"](),
    )
    token = form.get("token")
    if token is None:
        raise MalformedRequest("The 'token' parameter is missing.")
    return client, token


async def read_form(request: Request[Any], max_bytes: int) -> dict[str, str]:
    """The form parameters of the body; raise `MalformedRequest` or `PayloadTooLarge`.

    Parameters in the URL are refused (credentials and tokens never travel there); a repeated
    parameter is refused (RFC 6749 §3.1); an empty one counts as absent (also §3.1).
    """
    if request.url.query:
        raise MalformedRequest("Parameters must be sent in the request body.")
    if media_type(request) != FORM_MEDIA_TYPE:
        raise MalformedRequest(f"The body must be {FORM_MEDIA_TYPE}.")
    raw = await read_body(request, max_bytes)
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError included
        raise MalformedRequest("The body is not a valid form.") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        if [name for name, _ in pairs].count("resource") > 1:
            # RFC 8707 allows several; a token here is for one audience only.
            raise InvalidTarget("Ask for one resource per token.")
        raise MalformedRequest("A parameter is repeated.")
    return {name: value for name, value in form.items() if value != ""}


def client_secret_of(request: Request[Any], form: dict[str, str]) -> ClientSecret | None:
    """The client credentials, from HTTP Basic or the body (never both); None if neither."""
    headers = request.headers.getlist("authorization")
    in_body = "client_id" in form or "client_secret" in form
    if len(headers) > 1:
        raise MalformedRequest("More than one Authorization header.")
    if headers:
        if in_body:
            raise MalformedRequest("Use one client authentication method, not two.")
        return _basic_credentials(headers[0])
    if not in_body:
        return None
    if "client_id" not in form or "client_secret" not in form:
        # We register no public clients: an id alone authenticates nobody.
        raise InvalidClient()
    return ClientSecret(form["client_id"], form["client_secret"])


def _basic_credentials(header: str) -> ClientSecret:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise InvalidClient()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        # RFC 6749 §2.3.1: both halves are form-urlencoded before they are joined.
        client_id = unquote_plus(client_id, errors="strict")
        secret = unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):
        raise InvalidClient() from None
    if not colon or not client_id or not secret:
        raise InvalidClient()
    return ClientSecret(client_id, secret)


routes = [
    Route("/oauth/token", token, methods=["POST"]),
    Route("/oauth/revoke", revoke, methods=["POST"]),
    Route("/oauth/introspect", introspect, methods=["POST"]),
    Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
]
