"""Bearer tokens over HTTP (RFC 6750): reading `Authorization`, and answering a refusal.

The service's own bearer routes and every resource server built with `tokenrota.verify` go
through here, so a client meets one convention wherever it sends a token:

    no bearer token at all             401 missing_token       Bearer
    a well-formed token past its exp   403 token_expired       Bearer error="invalid_token", ...
    any other refused token or header  403 invalid_token       Bearer error="invalid_token", ...
    valid, but without a needed scope  403 insufficient_scope  Bearer error="insufficient_scope",
                                                                   ..., scope="..."
    a login too weak or too old        401 insufficient_user_authentication (RFC 9470)
                                           Bearer error="insufficient_user_authentication", ...,
                                           acr_values="aal2"[, max_age=N]
    keys or service cannot be asked    503 unavailable         (no challenge)
    a DPoP proof that fails (RFC 9449) 401 invalid_dpop_proof  DPoP error="invalid_dpop_proof", ...

Every challenge after bare `Bearer` carries `error_description`, the body's text. A resource
server built with `tokenrota.verify` adds `resource_metadata="<url>"` (RFC 9728 §5.1) to each
challenge, bare `Bearer` included: where a client learns which resource and which authorization
servers to ask.

401 asks for a token; 403 says that the token presented will not do. RFC 6750 would answer
invalid_token with 401 too; splitting them lets a client tell "log in" from "refresh, or the
session is over" without parsing the challenge. The body is always
`{"error": code, "error_description": text}`.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from tokenrota.errors import (
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidToken,
    MissingToken,
    ServiceError,
    Unavailable,
)

# The statuses of the library's errors; the server's table (its http/web.py) starts from it.
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    MissingToken: 401,
    InvalidToken: 403,
    InsufficientScope: 403,
    # RFC 9470 §3: a 401, so that the client goes back to the authorization server.
    InsufficientUserAuthentication: 401,
    InvalidDPoPProof: 401,
    Unavailable: 503,
}
# What a resource server accepts in a DPoP proof; the `algs` of its DPoP challenge.
DPOP_ALGORITHMS = "ES256 EdDSA Ed25519 RS256 PS256"

# RFC 6750 §3: error_description is limited to these characters (no quote, no backslash).
_UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def bearer_token(headers: Headers) -> str:
    """The token of the one `Authorization: Bearer` header; never read from the URL or a cookie.

    Raises `MissingToken` when there are no bearer credentials at all (no header, another
    scheme, `Bearer` alone) and `InvalidToken` for malformed ones (two headers, stray spaces).
    """
    values = headers.getlist("authorization")
    if not values:
        raise MissingToken()
    if len(values) > 1:
        raise InvalidToken()
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise MissingToken()
    if token != token.strip() or " " in token:
        raise InvalidToken()
    return token


def authorization(headers: Headers) -> tuple[str, str]:
    """The scheme (`bearer` or `dpop`, RFC 9449 §7.1) and token of the one `Authorization` header.

    Raises as `bearer_token` does; a DPoP token is read with the same strictness.
    """
    values = headers.getlist("authorization")
    if len(values) == 1 and values[0][:5].lower() == "dpop ":
        token = values[0][5:]
        if not token or token != token.strip() or " " in token:
            raise InvalidToken()
        return "dpop", token
    return "bearer", bearer_token(headers)


Refusal = (
    MissingToken
    | InvalidToken
    | InsufficientScope
    | InsufficientUserAuthentication
    | InvalidDPoPProof
)


def challenge(error: Refusal, scheme: str = "bearer", resource_metadata: str | None = None) -> str:
    """The `WWW-Authenticate` value for a refusal: bare `Bearer` when no token was presented.

    A request made with the DPoP scheme, or refused for its proof, is answered in DPoP's terms.
    `resource_metadata` is the URL of the resource server's RFC 9728 metadata, when it has one.
    """
    # A URL we were configured with, never the request's: quoted as RFC 9728 §5.1 writes it.
    metadata = f'resource_metadata="{_quotable(resource_metadata)}"' if resource_metadata else ""
    if isinstance(error, MissingToken):
        return f"Bearer {metadata}" if metadata else "Bearer"
    if isinstance(error, InvalidDPoPProof):
        code, scheme = error.code, "dpop"
    elif isinstance(error, InsufficientScope | InsufficientUserAuthentication):
        code = error.code
    else:
        # token_expired is an invalid_token to RFC 6750; the body says which.
        code = "invalid_token"
    name = "DPoP" if scheme == "dpop" else "Bearer"
    value = f'{name} error="{code}", error_description="{_quotable(error.description)}"'
    if isinstance(error, InsufficientScope) and error.scopes:
        value += f', scope="{_quotable(" ".join(error.scopes))}"'
    if isinstance(error, InsufficientUserAuthentication):
        value += f', acr_values="{_quotable(error.acr_values)}"'
        if error.max_age is not None:
            value += f", max_age={error.max_age}"
    if scheme == "dpop":
        value += f', algs="{DPOP_ALGORITHMS}"'
    if metadata:
        value += f", {metadata}"
    return value


def refusal(
    error: Refusal | Unavailable, scheme: str = "bearer", resource_metadata: str | None = None
) -> JSONResponse:
    """The JSON answer to a refused request, with its status and challenge."""
    headers = {"Cache-Control": "no-store"}
    if not isinstance(error, Unavailable):
        headers["WWW-Authenticate"] = challenge(error, scheme, resource_metadata)
    if isinstance(error, InvalidDPoPProof) and error.nonce is not None:
        headers["DPoP-Nonce"] = error.nonce
    status = next(STATUS_BY_ERROR[kind] for kind in type(error).__mro__ if kind in STATUS_BY_ERROR)
    return JSONResponse(
        {"error": error.code, "error_description": error.description},
        status_code=status,
        headers=headers,
    )


def _quotable(text: str) -> str:
    return _UNQUOTABLE.sub("", text)
