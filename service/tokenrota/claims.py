"""What a verified access token says: its claims as a typed value. Pure: no I/O, no clock.

The token service mints these (`tokenrota_server.tokens`); resource servers read them
(`tokenrota.verify`). Both go through `access_claims_of`, so a token one side accepts the
other reads the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenrota.errors import InvalidToken

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1


@dataclass(frozen=True)
class AccessClaims:
    """A verified access token. `session_id` and `email` are None for client tokens.

    `scope` is space-separated: a client's granted scopes, or the union of the scopes of a
    user's roles (`roles`, sorted; always empty for a client).
    """

    subject: str
    session_id: str | None
    jti: str
    issued_at: int
    expires_at: int
    scope: str
    email: str | None = None
    client_id: str | None = None
    roles: tuple[str, ...] = ()
    # RFC 9449 §6.1: the thumbprint of the key a DPoP-bound token is bound to (`cnf.jkt`).
    confirmation_jkt: str | None = None
    # How the user logged in (user tokens): RFC 8176 methods, the assurance level ("aal1" or
    # "aal2") and when (seconds since the epoch). None in tokens minted before they were.
    amr: tuple[str, ...] = ()
    acr: str | None = None
    auth_time: int | None = None


def access_claims_of(claims: dict[str, Any]) -> AccessClaims:
    """The access claims of checked registered claims; raise `InvalidToken` if ill-formed."""
    if "typ" in claims:
        raise InvalidToken()
    scope = claims.get("scope")
    session_id, email, client_id = claims.get("sid"), claims.get("email"), claims.get("client_id")
    if not isinstance(scope, str):
        raise InvalidToken()
    # A person's token names its session and email; a service's names its client.
    is_user_token = isinstance(session_id, str) and isinstance(email, str) and client_id is None
    is_client_token = isinstance(client_id, str) and session_id is None and email is None
    if not (is_user_token or is_client_token):
        raise InvalidToken()
    roles = claims.get("roles", [])
    # Only a person has roles; a list of names, or absent (tokens minted before roles were).
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken()
    if roles and not is_user_token:
        raise InvalidToken()
    amr, acr, auth_time = claims.get("amr", []), claims.get("acr"), claims.get("auth_time")
    if not isinstance(amr, list) or not all(isinstance(method, str) for method in amr):
        raise InvalidToken()
    if acr is not None and not isinstance(acr, str):
        raise InvalidToken()
    if auth_time is not None and (type(auth_time) is not int or auth_time > claims["iat"]):
        # Whole seconds (a bool is no time), and never after the token itself was issued.
        raise InvalidToken()
    return AccessClaims(
        subject=claims["sub"],
        session_id=session_id,
        jti=claims["jti"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        scope=scope,
        email=email,
        client_id=client_id,
        roles=tuple(roles),
        confirmation_jkt=confirmation_jkt_of(claims),
        amr=tuple(amr),
        acr=acr,
        auth_time=auth_time,
    )


def confirmation_jkt_of(claims: dict[str, Any]) -> str | None:
    """The DPoP key thumbprint a token is bound to (`cnf.jkt`, RFC 9449 §6), None if unbound;
    raise `InvalidToken` for a `cnf` without a string `jkt`. Access and refresh tokens alike."""
    confirmation = claims.get("cnf")
    if confirmation is None:
        return None
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if not isinstance(jkt, str):
        raise InvalidToken()
    return jkt
