"""The errors the library raises: the base of every error, and a token's refusals.

    ServiceError          (never raised itself)
    ├── MissingToken      missing_token: no bearer token where one is required
    ├── InvalidToken      invalid_token: any reason a token is refused
    │   └── TokenExpired  token_expired: a well-formed token past its `exp`
    ├── InsufficientScope insufficient_scope: a valid token without a scope the route needs
    ├── InsufficientUserAuthentication
    │                     insufficient_user_authentication: the login is too weak or too old
    ├── InvalidDPoPProof  invalid_dpop_proof: a DPoP proof (RFC 9449) that fails a check
    │   └── UseDPoPNonce  use_dpop_nonce: a proof without the server's current nonce
    └── Unavailable       unavailable: the token service (or its database) cannot be asked

The server adds its own errors under the same base (`tokenrota_server.errors`), so one
hierarchy and one status table cover both.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The settings are unusable; the message is one line that says why (and holds no secret)."""


class ServiceError(Exception):
    """Base of every error a request can end in. Never raised itself."""

    code = "server_error"
    description = "The request could not be completed."

    def __init__(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description
        super().__init__(self.description)


class MissingToken(ServiceError):
    code = "missing_token"
    description = "No token was presented."


class InvalidToken(ServiceError):
    code = "invalid_token"
    description = "The token is invalid."


class TokenExpired(InvalidToken):
    code = "token_expired"
    description = "The token has expired."


class InsufficientScope(ServiceError):
    code = "insufficient_scope"
    description = "The token lacks a required scope."

    def __init__(self, scopes: tuple[str, ...]) -> None:
        super().__init__()
        self.scopes = scopes


class InsufficientUserAuthentication(ServiceError):
    """RFC 9470: the token's login is below `acr_values` or older than `max_age` seconds."""

    code = "insufficient_user_authentication"
    description = "A stronger or more recent authentication is required."

    def __init__(self, *, acr_values: str = "aal2", max_age: int | None = None) -> None:
        super().__init__()
        self.acr_values = acr_values
        self.max_age = max_age


class InvalidDPoPProof(ServiceError):
    code = "invalid_dpop_proof"
    description = "The DPoP proof is invalid."


class UseDPoPNonce(InvalidDPoPProof):
    code = "use_dpop_nonce"
    description = "The DPoP proof must carry the server's nonce."


class Unavailable(ServiceError):
    code = "unavailable"
    description = "The service is temporarily unavailable."
