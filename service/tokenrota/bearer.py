"""Bearer tokens over HTTP (RFC 6750): reading `Authorization`, and answering a refusal.

The service's own bearer routes and every resource server built with `tokenrota.verify` go
through here, so a client meets one convention wherever it sends a token:

    no bearer token at all             401 missing_token       Bearer
    a well-formed token past its exp   403 token_expired       Bearer error="invalid_token", ...
    any other refused token or header  403 invalid_token       Bearer error="invalid_token", ...
    valid, but without a needed scope  403 insufficient_scope  Bearer error="insufficient_scope",
                                                                   ..., scope="..."
    keys or service cannot be asked    503 unavailable         (no challenge)

Every challenge after bare `Bearer` carries `error_description`, the body's text.

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
    Unavailable: 503,
}

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


def challenge(error: MissingToken | InvalidToken | InsufficientScope) -> str:
    """The `WWW-Authenticate` value for a refusal: bare `Bearer` when no token was presented."""
    if isinstance(error, MissingToken):
        return "Bearer"
    # token_expired is an invalid_token to RFC 6750; the body says which.
    code = "insufficient_scope" if isinstance(error, InsufficientScope) else "invalid_token"
    value = f'Bearer error="{code}", error_description="{_quotable(error.description)}"'
    if isinstance(error, InsufficientScope) and error.scopes:
        value += f', scope="{_quotable(" ".join(error.scopes))}"'
    return value


def refusal(error: MissingToken | InvalidToken | InsufficientScope | Unavailable) -> JSONResponse:
    """The JSON answer to a refused bearer request, with its status and challenge."""
    headers = {"Cache-Control": "no-store"}
    if not isinstance(error, Unavailable):
        headers["WWW-Authenticate"] = challenge(error)
    status = next(STATUS_BY_ERROR[kind] for kind in type(error).__mro__ if kind in STATUS_BY_ERROR)
    return JSONResponse(
        {"error": error.code, "error_description": error.description},
        status_code=status,
        headers=headers,
    )


def _quotable(text: str) -> str:
    return _UNQUOTABLE.sub("", text)
