"""The HTTP edge: reading request bodies and bearer tokens, and rendering errors.

Starlette alone would answer 500 to malformed JSON, accept a 20 MB body and read JSON sent as
text/plain; everything a handler reads goes through here instead.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse
from tokenrota import bearer
from tokenrota.claims import confirmation_jkt_of
from tokenrota.errors import InsufficientScope, InsufficientUserAuthentication

from tokenrota_server import dpop
from tokenrota_server.errors import (
    AlreadyVerified,
    CsrfFailed,
    EmailTaken,
    EmailUnverified,
    InvalidAccountToken,
    InvalidClient,
    InvalidCode,
    InvalidCredentials,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidInput,
    InvalidMfaToken,
    InvalidPasskey,
    InvalidResourceProof,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    MalformedRequest,
    MfaRequired,
    MissingToken,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RoleInUse,
    ServiceError,
    TooManyAttempts,
    Unavailable,
    UnsupportedGrantType,
    UnsupportedMediaType,
)

# The one table from error to HTTP status: the library's bearer statuses (missing 401, invalid
# 403, unavailable 503), which resource servers answer too, and the server's own. Subclasses
# take their base's status.
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    **bearer.STATUS_BY_ERROR,
    MalformedRequest: 400,
    InvalidCredentials: 401,
    CsrfFailed: 403,
    NotFound: 404,
    EmailTaken: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    TooManyAttempts: 429,
    InvalidClient: 401,
    InvalidGrant: 400,
    UnsupportedGrantType: 400,
    InvalidScope: 400,
    InvalidTarget: 400,
    InvalidAccountToken: 400,
    AlreadyVerified: 409,
    EmailUnverified: 403,
    RoleInUse: 409,
    MfaRequired: 403,
    InvalidCode: 401,
    InvalidMfaToken: 401,
    # RFC 9449 §5: at the token endpoint a bad proof is a bad request (resource servers: 401).
    InvalidDPoPProof: 400,
    InvalidResourceProof: 401,
    InvalidPasskey: 400,
}

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Seconds a client should wait before asking again while the database is away; a failover
# takes about Patroni's TTL (docs/operations.md), a restart a few seconds.
UNAVAILABLE_RETRY_AFTER = 1


def status_of(error: ServiceError) -> int:
    """The error's status in `STATUS_BY_ERROR`, else its nearest listed base's, else 500."""
    for kind in type(error).__mro__:
        if kind in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[kind]
    return 500


def error_response(error: ServiceError) -> JSONResponse:
    """The JSON body `{"error", "error_description"}` with the error's status and headers."""
    headers = dict(NO_STORE)
    if isinstance(
        error,
        MissingToken
        | InvalidToken
        | InsufficientScope
        | InsufficientUserAuthentication
        | InvalidResourceProof,
    ):
        # The same challenge as a resource server's (tokenrota.bearer): one convention.
        headers["WWW-Authenticate"] = bearer.challenge(error)
    elif isinstance(error, InvalidClient):
        # RFC 6749 §5.2: a 401 invalid_client names the scheme the client should use.
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    elif isinstance(error, TooManyAttempts | Overloaded):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, Unavailable):
        # The database is away (a restart, a failover): worth asking again in a moment.
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    if isinstance(error, InvalidDPoPProof) and error.nonce is not None:
        headers["DPoP-Nonce"] = error.nonce
    body: dict[str, Any] = {"error": error.code, "error_description": error.description}
    if isinstance(error, MfaRequired):
        body.update(mfa_token=error.mfa_token, factors=error.factors)
    return JSONResponse(body, status_code=status_of(error), headers=headers)


def token_response(body: dict[str, Any], status_code: int = 200) -> JSONResponse:
    """A response carrying tokens: never cached (RFC 6749 §5.1)."""
    return JSONResponse(body, status_code=status_code, headers=NO_STORE)


async def read_json(
    request: Request[Any], max_bytes: int, *, allow_empty: bool = False
) -> dict[str, Any]:
    """The request's JSON object; raise 415, 413 or 400 errors for anything else.

    With `allow_empty`, a request without a body reads as `{}`.
    """
    if allow_empty and not has_body(request):
        return {}
    if media_type(request) != "application/json":
        raise UnsupportedMediaType()
    raw = await read_body(request, max_bytes)
    try:
        body = json.loads(
            raw.decode("utf-8"),
            parse_constant=_refuse_constant,
            object_pairs_hook=_refuse_duplicate_keys,
        )
    except (ValueError, RecursionError):
        raise MalformedRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise MalformedRequest("The body must be a JSON object.")
    return body


async def read_body(request: Request[Any], max_bytes: int) -> bytes:
    """The raw body; raise `PayloadTooLarge` past `max_bytes`, `MalformedRequest` for a bad length.

    The body is streamed and abandoned past `max_bytes`, so an oversized one is never held whole,
    whatever its Content-Length claimed.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequest("The Content-Length header is not valid.")
        if int(declared) > max_bytes:
            raise PayloadTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def path_uuid(request: Request[Any], name: str, not_found: str) -> UUID:
    """The path's `name` parameter as a UUID. A malformed id is just not found (404
    `not_found`), the same answer as for an id that is another user's: it tells nothing."""
    try:
        return UUID(request.path_params[name])
    except ValueError:
        raise NotFound(not_found) from None


def media_type(request: Request[Any]) -> str:
    """The Content-Type without its parameters, lower-cased; empty when there is none."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def has_body(request: Request[Any]) -> bool:
    """Whether the request declares a body (a non-zero length, or a chunked one)."""
    declared = request.headers.get("content-length")
    return declared not in (None, "0") or "transfer-encoding" in request.headers


def string_field(body: dict[str, Any], name: str) -> str:
    """A required string field of a JSON body; raise `InvalidInput` when missing or not a string."""
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string.")
    if not _is_unicode_text(value):
        raise InvalidInput(f"'{name}' is not valid Unicode text.")
    return value


def boolean_field(body: dict[str, Any], name: str) -> bool:
    """An optional boolean field (absent is false); raise `InvalidInput` for any other type."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false.")
    return value


async def bearer_token(request: Request[Any]) -> str:
    """The access token of the one `Authorization` header (`Bearer`, or `DPoP` with its proof);
    never read from the URL.

    No credentials at all is `MissingToken` (401); anything malformed is `InvalidToken`. A token
    bound to a DPoP key (`cnf.jkt`) is `InvalidToken` as a bearer; under the DPoP scheme its
    proof must be by that key, for this request and token, and new to every instance, else
    `InvalidResourceProof` (401). The binding is read before the signature is checked: the use
    case then verifies the token, and the signature covers the `cnf` compared here.
    """
    scheme, token = bearer.authorization(request.headers)
    bound_to = _unverified_jkt(token)
    if scheme == "bearer":
        if bound_to is not None:
            raise InvalidToken("A DPoP-bound token needs its proof.")
        return token
    state = request.state
    try:
        proof = state["proofs"].check(
            request.headers.getlist("dpop"),
            method=request.method,
            path=request.url.path,
            now=state["clock"](),
            access_token=token,
        )
        if proof is None:
            raise InvalidDPoPProof("A DPoP proof is required.")
        if bound_to is None:
            raise InvalidToken("The token is not DPoP-bound.")
        if proof.jkt != bound_to:
            raise InvalidDPoPProof("The DPoP proof is by another key than the token's.")
        async with state["pool"].acquire() as connection:
            await dpop.record(connection, proof)
    except InvalidDPoPProof as refused:
        raise InvalidResourceProof(refused) from None
    return token


def _unverified_jkt(token: str) -> str | None:
    """The `cnf.jkt` a token claims, read without checking it (see `bearer_token`)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        # A malformed cnf reads as unbound here; verifying the token refuses it.
        return confirmation_jkt_of(claims) if isinstance(claims, dict) else None
    except (IndexError, ValueError, UnicodeDecodeError, RecursionError, InvalidToken):
        return None


def _is_unicode_text(value: str) -> bool:
    # JSON's \ud800 escapes decode to lone surrogates, which neither UTF-8 nor Postgres nor
    # argon2 can take; refused here, they would end in a 500 deep inside.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("duplicate key")
    return body


def refuse_other_fields(body: dict[str, Any], *names: str) -> None:
    """Raise `InvalidInput` when the body has a field other than `names` (a typo, a guess)."""
    others = sorted(set(body) - set(names))
    if others:
        # The names are the caller's own text: quoted back only when short and printable.
        shown = others[0] if len(others[0]) <= 40 and others[0].isprintable() else "a field"
        raise InvalidInput(f"Unexpected field '{shown}'.")
