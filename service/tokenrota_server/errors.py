"""The service's errors: one small hierarchy, each error naming its machine code.

    ServiceError                 (never raised itself)
    ├── MalformedRequest         invalid_request: the body or a parameter cannot be read
    ├── UnsupportedMediaType     unsupported_media_type
    ├── PayloadTooLarge          payload_too_large
    ├── InvalidInput             invalid_input: well-formed, but a field is wrong
    │   └── WeakPassword         weak_password
    ├── EmailTaken               email_taken
    ├── InvalidCredentials       invalid_credentials: wrong email or password, or disabled user
    ├── TooManyAttempts          too_many_attempts
    ├── MissingToken             missing_token
    ├── InvalidToken             invalid_token: any reason a token is refused
    │   └── TokenExpired         token_expired (access tokens only)
    ├── CsrfFailed               csrf_failed
    ├── NotFound                 not_found
    ├── InvalidClient            invalid_client: OAuth client authentication failed (RFC 6749 §5.2)
    ├── InvalidGrant             invalid_grant: the refresh token is refused (OAuth endpoint)
    ├── UnsupportedGrantType     unsupported_grant_type
    ├── InvalidScope             invalid_scope
    ├── InvalidAccountToken      invalid_token: a reset or verification token is refused (400)
    ├── AlreadyVerified          already_verified
    ├── EmailUnverified          email_unverified: /login with REQUIRE_VERIFIED_EMAIL
    ├── RoleInUse                role_in_use: a role cannot be deleted while a user holds it
    ├── InvalidDPoPProof         invalid_dpop_proof: a DPoP proof at the token endpoint fails (400)
    │   └── InvalidResourceProof invalid_dpop_proof or use_dpop_nonce at a bearer route (401)
    └── Unavailable              unavailable: the database cannot be reached
        └── Overloaded           unavailable: too many checks or new secrets wait for argon2

The base and the token errors come from the library (`tokenrota.errors`). HTTP statuses
are assigned in one table at the edge (`tokenrota_server.http.web.STATUS_BY_ERROR`). Library
errors are translated into these where the library is called.
"""

from __future__ import annotations

from tokenrota.errors import (
    ConfigError,
    InvalidDPoPProof,
    InvalidToken,
    MissingToken,
    ServiceError,
    TokenExpired,
    Unavailable,
)

__all__ = [
    "AlreadyVerified",
    "ConfigError",
    "CsrfFailed",
    "EmailTaken",
    "EmailUnverified",
    "InvalidAccountToken",
    "InvalidClient",
    "InvalidCredentials",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidInput",
    "InvalidResourceProof",
    "InvalidScope",
    "InvalidToken",
    "MalformedRequest",
    "MissingToken",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RoleInUse",
    "ServiceError",
    "TokenExpired",
    "TooManyAttempts",
    "Unavailable",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
    "WeakPassword",
]


class MalformedRequest(ServiceError):
    code = "invalid_request"
    description = "The request is malformed."


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"
    description = "The request body must be application/json."


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    description = "The request body is too large."


class InvalidInput(ServiceError):
    code = "invalid_input"
    description = "A field of the request is missing or invalid."


class WeakPassword(InvalidInput):
    code = "weak_password"
    description = "The password must be 8 to 128 characters long."


class EmailTaken(ServiceError):
    code = "email_taken"
    description = "An account with this email already exists."


class InvalidCredentials(ServiceError):
    code = "invalid_credentials"
    description = "The email or password is incorrect."


class TooManyAttempts(ServiceError):
    """A throttle's limit: failed logins or client authentications, registrations, or reset
    requests, within the throttle's window; `retry_after` is in seconds."""

    code = "too_many_attempts"
    description = "Too many attempts; try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after


class CsrfFailed(ServiceError):
    code = "csrf_failed"
    description = "The request did not come from an allowed origin."


class NotFound(ServiceError):
    code = "not_found"
    description = "Not found."


class InvalidClient(ServiceError):
    code = "invalid_client"
    description = "Client authentication failed."


class InvalidGrant(ServiceError):
    code = "invalid_grant"
    description = "The grant is invalid, expired or revoked."


class UnsupportedGrantType(ServiceError):
    code = "unsupported_grant_type"
    description = "The grant type is not supported."


class InvalidScope(ServiceError):
    code = "invalid_scope"
    description = "The requested scope is invalid or exceeds what the client may ask for."


class InvalidAccountToken(ServiceError):
    """A token from a reset or verification message: unknown, used, expired or superseded.

    Not an `InvalidToken`: it is no bearer credential, so it is a 400 without a challenge.
    """

    code = "invalid_token"
    description = "The link is invalid, expired or already used; ask for a new one."


class AlreadyVerified(ServiceError):
    code = "already_verified"
    description = "The email address is already verified."


class EmailUnverified(ServiceError):
    code = "email_unverified"
    description = "The email address must be verified first; follow the link sent to it."


class RoleInUse(ServiceError):
    code = "role_in_use"
    description = "The role is held by at least one user; take it from them first."


class Overloaded(Unavailable):
    """More password checks wait for an argon2 thread than ARGON2_MAX_QUEUED_CHECKS allows, or
    more new secrets for their share than ARGON2_MAX_QUEUED_HASHES.

    Raised before any work of the check's own, whatever its outcome would have been: the same
    answer for a known and an unknown email, and before a throttle counts the request.
    `retry_after` is in seconds.
    """

    description = "The service is busy; try again in a moment."

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__()
        self.retry_after = retry_after


class InvalidResourceProof(InvalidDPoPProof):
    """A DPoP proof refused at one of the service's own bearer routes (RFC 9449 §7.1: 401),
    with the code (`use_dpop_nonce` too) and nonce of the refusal it stands for."""

    def __init__(self, refused: InvalidDPoPProof) -> None:
        super().__init__(refused.description)
        self.code, self.nonce = refused.code, refused.nonce
