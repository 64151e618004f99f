"""What each endpoint takes and answers, as OpenAPI operations keyed by (method, path).

`tokenrota_server.http.openapi` joins these with the routes the app really serves; a test fails when
a served route has no entry here, so a new endpoint cannot ship undescribed. Entries for
endpoints that are not served are left out of the document (some belong to features merged
separately). Every status an endpoint can answer is listed with the exact error codes it can
carry.
"""

from __future__ import annotations

from typing import Any

Operation = dict[str, Any]

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ADMIN_BEARER: list[dict[str, list[str]]] = [{"adminBearer": []}]
# Basic, or client_id and client_secret as form fields (which OpenAPI cannot express: `{}`).
CLIENT_AUTH: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]


# passwords.check_password_policy: 8 to 128 characters.
NEW_PASSWORD = {"type": "string", "minLength": 8, "maxLength": 128}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, **extra}
    if schema is not None:
        response["content"] = json_content(schema)
    return response


def error(description: str, *codes: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON error response whose `error` is one of `codes`."""
    schema = {
        "allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}],
    }
    response: dict[str, Any] = {"description": description, "content": json_content(schema)}
    if headers:
        response["headers"] = headers
    return response


def json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def form_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


NO_STORE = {
    "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
    "Pragma": {"schema": {"type": "string", "const": "no-cache"}},
}
CHALLENGE = {"WWW-Authenticate": {"schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}}}
UNAVAILABLE = {
    503: error(
        "The database is unreachable (down, restarting, or failing over to its standby); retry"
        " after Retry-After seconds.",
        "unavailable",
        headers=RETRY_AFTER,
    )
}
# Where a password or client secret is checked, argon2 may also be too busy to queue for.
UNAVAILABLE_OR_BUSY = {
    503: error(
        "The database is unreachable, or more than ARGON2_MAX_QUEUED_CHECKS password checks"
        " already wait (the same for any email or client; counted toward no throttle); retry"
        " after Retry-After seconds.",
        "unavailable",
        headers={"Retry-After": {"schema": {"type": "integer"}}},
    )
}
# Where a new secret is hashed, its share of argon2 may be too busy to queue for.
UNAVAILABLE_OR_HASHING_BUSY = {
    503: error(
        "The database is unreachable, or more than ARGON2_MAX_QUEUED_HASHES new secrets"
        " already wait (nothing written, counted toward no throttle); retry after Retry-After"
        " seconds.",
        "unavailable",
        headers={"Retry-After": {"schema": {"type": "integer"}}},
    )
}
# /password both checks the current password and hashes the new one.
UNAVAILABLE_OR_EITHER_BUSY = {
    503: error(
        "The database is unreachable, or more than ARGON2_MAX_QUEUED_CHECKS password checks or"
        " ARGON2_MAX_QUEUED_HASHES new secrets already wait (nothing written, counted toward no"
        " throttle); retry after Retry-After seconds.",
        "unavailable",
        headers={"Retry-After": {"schema": {"type": "integer"}}},
    )
}
# What any endpoint that reads a JSON body can answer before it looks at the fields.
JSON_BODY_ERRORS = {
    400: error("The body is not a JSON object.", "invalid_request"),
    413: error("The body is larger than MAX_BODY_BYTES.", "payload_too_large"),
    415: error("The body is not application/json.", "unsupported_media_type"),
}
# RFC 9449: the optional proof that binds a session (at /login) or proves its key (later).
DPOP_HEADER = {
    "name": "DPoP",
    "in": "header",
    "required": False,
    "description": "An RFC 9449 proof for this method and URL.",
    # A compact JWS within tokenrota.dpop's size cap.
    "schema": {
        "type": "string",
        "maxLength": 8192,
        "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
    },
}
JSON_BODY_OR_PROOF_ERRORS = {
    **JSON_BODY_ERRORS,
    400: error(
        "The body is not a JSON object, `resource` is not one registered absolute URI, or the"
        " DPoP proof is refused (`use_dpop_nonce`, with DPOP_NONCE: make it again with the nonce"
        " in the `DPoP-Nonce` header).",
        "invalid_request",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "invalid_target",
    ),
}
BEARER_ERRORS = {
    401: error(
        "No bearer token; or, under `Authorization: DPoP`, its proof is refused (with"
        " DPOP_NONCE, `use_dpop_nonce` and the nonce in `DPoP-Nonce`).",
        "missing_token",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        headers=CHALLENGE,
    ),
    403: error(
        "The token is invalid, expired, or its session is over.",
        "invalid_token",
        "token_expired",
        headers=CHALLENGE,
    ),
}
# RFC 6749 §5.2; a body that is not a form, or parameters in the URL, are invalid_request.
OAUTH_ERRORS = {
    400: error("The request is malformed.", "invalid_request"),
    401: error("Client authentication failed.", "invalid_client", headers=CHALLENGE),
    413: error("The body is larger than MAX_BODY_BYTES.", "payload_too_large"),
    429: error(
        "Too many failed client authentications from this address.",
        "too_many_attempts",
        headers={"Retry-After": {"schema": {"type": "integer"}}},
    ),
}
NOT_IN_PRODUCTION = {404: error("Not served in production.", "not_found")}


def static(media_type: str, summary: str, more: dict[int, Any] | None = None) -> Operation:
    """A GET of a file the service ships."""
    content = {media_type: {"schema": {"type": "string"}}}
    return {
        "tags": ["browser"],
        "summary": summary,
        "responses": {200: {"description": "The file.", "content": content}, **(more or {})},
    }


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/register"): {
        "tags": ["people"],
        "summary": "Create a user",
        "requestBody": json_body(ref("Credentials")),
        "responses": {
            201: ok("The new user.", ref("UserEnvelope")),
            **JSON_BODY_ERRORS,
            409: error("An account with this email exists.", "email_taken"),
            422: error(
                "Invalid email, or a password not 8 to 128 characters.",
                "invalid_input",
                "weak_password",
            ),
            429: error(
                "Too many registrations from this address in the window"
                " (REGISTER_IP_MAX_ATTEMPTS), whether or not the email is taken.",
                "too_many_attempts",
                headers={"Retry-After": {"schema": {"type": "integer"}}},
            ),
            **UNAVAILABLE_OR_HASHING_BUSY,
        },
    },
    ("POST", "/login"): {
        "tags": ["people"],
        "summary": "Log in: start a session and get a token pair",
        "description": "With `use_cookie`, the refresh token is set in the "
        "`__Host-refresh_token` cookie and left out of the body.",
        "parameters": [DPOP_HEADER],
        "requestBody": json_body(ref("Login")),
        "responses": {
            200: ok("A new session's token pair.", ref("TokenPair"), headers=NO_STORE),
            **JSON_BODY_OR_PROOF_ERRORS,
            401: error(
                "Wrong email or password (the same answer for both).", "invalid_credentials"
            ),
            403: error(
                "The password is right and the user has a second factor: the body also carries"
                " `mfa_token` (for /login/mfa, single use, MFA_TOKEN_TTL seconds) and `factors`"
                " (`[{id, type}]`). Or REQUIRE_VERIFIED_EMAIL and the (correct) password's user"
                " has not verified the email yet.",
                "mfa_required",
                "email_unverified",
            ),
            422: error("A field is missing or not a string.", "invalid_input"),
            429: error(
                "Too many attempts for this email (known or not) or from this address in the"
                " window (LOGIN_EMAIL_MAX_ATTEMPTS, LOGIN_IP_MAX_ATTEMPTS).",
                "too_many_attempts",
                headers={"Retry-After": {"schema": {"type": "integer"}}},
            ),
            **UNAVAILABLE_OR_BUSY,
        },
    },
    ("POST", "/refresh"): {
        "tags": ["people"],
        "summary": "Trade a refresh token for a new pair (rotation)",
        "description": "The token comes from the body, or from the refresh cookie (then an "
        "allowed Origin and `X-Requested-With` are required). The presented token is spent.",
        "parameters": [DPOP_HEADER],
        "requestBody": json_body(ref("RefreshRequest"), required=False),
        "security": [{}, {"refreshCookie": []}],
        "responses": {
            200: ok("The new token pair.", ref("TokenPair"), headers=NO_STORE),
            **JSON_BODY_OR_PROOF_ERRORS,
            401: error("No refresh token.", "missing_token", headers=CHALLENGE),
            403: error(
                "The refresh token is refused, or the request failed the CSRF check.",
                "invalid_token",
                "csrf_failed",
                headers=CHALLENGE,
            ),
            422: error("`refresh_token` is not a string.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
    ("POST", "/logout"): {
        "tags": ["people"],
        "summary": "End the refresh token's session (idempotent)",
        "requestBody": json_body(ref("RefreshRequest"), required=False),
        "security": [{}, {"refreshCookie": []}],
        "responses": {
            204: ok("The session is over (or never was)."),
            **JSON_BODY_ERRORS,
            401: error("No refresh token.", "missing_token", headers=CHALLENGE),
            403: error("The request failed the CSRF check.", "csrf_failed"),
            422: error("`refresh_token` is not a string.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
    ("GET", "/profile"): {
        "tags": ["people"],
        "summary": "The user behind an access token whose session is live",
        "security": BEARER,
        "responses": {200: ok("The user.", ref("UserEnvelope")), **BEARER_ERRORS, **UNAVAILABLE},
    },
    ("GET", "/sessions"): {
        "tags": ["sessions"],
        "summary": "The caller's live sessions",
        "security": BEARER,
        "responses": {
            200: ok("Sessions, newest use first.", ref("SessionList"), headers=NO_STORE),
            **BEARER_ERRORS,
            **UNAVAILABLE,
        },
    },
    ("DELETE", "/sessions/{session_id}"): {
        "tags": ["sessions"],
        "summary": "Revoke one of the caller's sessions and its tokens",
        "security": BEARER,
        "responses": {
            204: ok("Revoked."),
            **BEARER_ERRORS,
            404: error("No such session of the caller's.", "not_found"),
            **UNAVAILABLE,
        },
    },
    ("PATCH", "/sessions/{session_id}"): {
        "tags": ["sessions"],
        "summary": "Name one of the caller's sessions (a device label); null clears it",
        "security": BEARER,
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["name"],
                # 1 to 100 printable characters once trimmed: at least one that is not a space.
                "properties": {
                    "name": {"type": ["string", "null"], "maxLength": 100, "pattern": "\\S"}
                },
                "additionalProperties": False,
            }
        ),
        "responses": {
            200: ok(
                "Named.",
                {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "name": {"type": ["string", "null"]},
                    },
                },
                headers=NO_STORE,
            ),
            **JSON_BODY_ERRORS,
            **BEARER_ERRORS,
            404: error("No such session of the caller's.", "not_found"),
            422: error(
                "The name is missing or not 1 to 100 printable characters, or another field.",
                "invalid_input",
            ),
            **UNAVAILABLE,
        },
    },
    ("POST", "/logout/all"): {
        "tags": ["sessions"],
        "summary": "Revoke every session of the caller",
        "security": BEARER,
        "responses": {204: ok("All revoked."), **BEARER_ERRORS, **UNAVAILABLE},
    },
    ("POST", "/password"): {
        "tags": ["sessions"],
        "summary": "Change the password; every other session is revoked",
        "security": BEARER,
        "requestBody": json_body(ref("PasswordChange")),
        "responses": {
            204: ok("Changed."),
            **JSON_BODY_ERRORS,
            401: error(
                "No bearer token, or a wrong current password.",
                "missing_token",
                "invalid_credentials",
                headers=CHALLENGE,
            ),
            403: BEARER_ERRORS[403],
            422: error("A weak new password or a missing field.", "invalid_input", "weak_password"),
            429: error(
                "Too many password attempts for this account or from this address in the window"
                " (the login throttle).",
                "too_many_attempts",
                headers={"Retry-After": {"schema": {"type": "integer"}}},
            ),
            **UNAVAILABLE_OR_EITHER_BUSY,
        },
    },
    ("GET", "/auth-client.js"): static(
        "text/javascript", "The JS client for browser frontends: login, silent refresh, logout"
    ),
    ("GET", "/demo"): static("text/html", "A demonstration page", NOT_IN_PRODUCTION),
    ("GET", "/demo.js"): static("text/javascript", "The demo's script", NOT_IN_PRODUCTION),
    ("GET", "/demo.css"): static("text/css", "The demo's style", NOT_IN_PRODUCTION),
    ("GET", "/console"): static("text/html", "The operators' console (a page on the admin API)"),
    ("GET", "/console/config.json"): {
        "tags": ["browser"],
        "summary": "What the console needs before signing in: the admin API's audience, the audit"
        " log's actions",
        "responses": {
            200: ok(
                "The console's configuration.",
                {
                    "type": "object",
                    "required": ["admin_audience", "audit_actions"],
                    "properties": {
                        "admin_audience": {"type": "string", "format": "uri"},
                        "audit_actions": {"type": "array", "items": {"type": "string"}},
                    },
                },
            )
        },
    },
    ("GET", "/console/{name}"): {
        **static("text/javascript", "One of the console's modules, or its style (text/css)"),
        "responses": {
            200: {
                "description": "The file.",
                "content": {
                    "text/javascript": {"schema": {"type": "string"}},
                    "text/css": {"schema": {"type": "string"}},
                },
            },
            404: error("No such file in the console.", "not_found"),
        },
    },
    ("POST", "/oauth/token"): {
        "tags": ["oauth"],
        "summary": "OAuth 2.0 token endpoint: client_credentials, refresh_token and token"
        " exchange (RFC 8693) grants, each with RFC 8707's `resource`",
        "security": CLIENT_AUTH,
        "parameters": [
            {
                **DPOP_HEADER,
                "description": "An RFC 9449 proof: a client_credentials token is then bound to"
                " its key (`cnf.jkt`, token_type DPoP).",
            }
        ],
        "requestBody": form_body(ref("TokenRequest")),
        "responses": {
            200: ok("RFC 6749 §5.1 token response.", ref("OAuthTokenResponse"), headers=NO_STORE),
            **OAUTH_ERRORS,
            400: error(
                "RFC 6749 §5.2 (`password` and other grants are unsupported).",
                "invalid_request",
                "invalid_grant",
                "unsupported_grant_type",
                "invalid_scope",
                "invalid_target",
                "invalid_dpop_proof",
                "use_dpop_nonce",
            ),
            **UNAVAILABLE_OR_BUSY,
        },
    },
    ("POST", "/oauth/revoke"): {
        "tags": ["oauth"],
        "summary": "RFC 7009 token revocation",
        "security": CLIENT_AUTH,
        "requestBody": form_body(ref("TokenReference")),
        "responses": {
            200: ok("Revoked, or nothing to revoke."),
            **OAUTH_ERRORS,
            **UNAVAILABLE_OR_BUSY,
        },
    },
    ("POST", "/oauth/introspect"): {
        "tags": ["oauth"],
        "summary": "RFC 7662 token introspection",
        "security": CLIENT_AUTH,
        "requestBody": form_body(ref("TokenReference")),
        "responses": {
            200: ok("Whether the token is active, and its claims if so.", ref("Introspection")),
            **OAUTH_ERRORS,
            **UNAVAILABLE_OR_BUSY,
        },
    },
    ("GET", "/oauth/revocations"): {
        "tags": ["oauth"],
        "summary": "The revocation feed: sessions and client tokens revoked after a cursor",
        "description": "Without `after`: what was revoked within ACCESS_TOKEN_TTL + JWT_LEEWAY."
        " With `wait`, held until something is revoked or `wait` seconds pass (long polling)."
        " Client authentication by HTTP Basic only, of a client granted the scope"
        " `revocations:read`.",
        "security": [{"clientBasic": []}],
        "parameters": [
            {
                "name": "after",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "format": "feed-cursor", "maxLength": 64},
                "description": "The `cursor` of the answer before (docs/revocation.md).",
            },
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0, "maximum": 30, "default": 0},
            },
        ],
        "responses": {
            200: ok(
                "The revocations after the cursor, and the cursor to ask after next.",
                {
                    "type": "object",
                    "required": ["cursor", "sessions", "tokens", "clients"],
                    "properties": {
                        "cursor": {"type": "string"},
                        "sessions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "sid": {"type": "string", "format": "uuid"},
                                    "revoked_at": {"type": "integer"},
                                },
                            },
                        },
                        "tokens": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "jti": {"type": "string"},
                                    "exp": {"type": "integer"},
                                },
                            },
                        },
                        "clients": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "client_id": {"type": "string"},
                                    "revoked_at": {"type": "integer"},
                                },
                            },
                        },
                    },
                },
                headers=NO_STORE,
            ),
            400: error("A bad cursor, `wait` or query.", "invalid_request"),
            401: error("Client authentication failed.", "invalid_client", headers=CHALLENGE),
            403: error(
                "The client is not granted the scope revocations:read.", "insufficient_scope"
            ),
            429: error("Too many failed client authentications.", "too_many_attempts"),
            **UNAVAILABLE_OR_BUSY,
        },
    },
    ("GET", "/.well-known/oauth-authorization-server"): {
        "tags": ["oauth"],
        "summary": "RFC 8414 authorization server metadata",
        "responses": {200: ok("Metadata.", {"type": "object"})},
    },
    ("GET", "/.well-known/jwks.json"): {
        "tags": ["oauth"],
        "summary": "RFC 7517 public keys that sign access tokens",
        "responses": {
            200: ok("The key set.", ref("Jwks")),
            404: error("Access tokens are signed with HS256: no public keys.", "not_found"),
        },
    },
    ("GET", "/healthz"): {
        "tags": ["operations"],
        "summary": "Liveness: the process serves (says nothing of the database)",
        "responses": {200: ok("Alive.", ref("Health"))},
    },
    ("GET", "/readyz"): {
        "tags": ["operations"],
        "summary": "Readiness: the database answers and is migrated to head",
        "responses": {
            200: ok("Ready.", ref("Ready")),
            503: error("Not ready.", "unavailable", headers=RETRY_AFTER),
        },
    },
    ("GET", "/metrics"): {
        "tags": ["operations"],
        "summary": "Prometheus metrics, text format",
        "responses": {
            200: {
                "description": "Metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    },
    ("GET", "/openapi.json"): {
        "tags": ["operations"],
        "summary": "This document",
        "responses": {200: ok("OpenAPI 3.1.", {"type": "object"})},
    },
    ("GET", "/docs"): {
        "tags": ["operations"],
        "summary": "Interactive API documentation (Swagger UI); off in production by default",
        "responses": {
            200: {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}
        },
    },
}


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object with exactly these (required) string properties."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


_ACCOUNT_TOKEN = {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}
_EMPTY = {"type": "object", "maxProperties": 0}
_BAD_ACCOUNT_TOKEN = error(
    "The body is not a JSON object, or the token is unknown, used, expired, superseded or of"
    " another purpose.",
    "invalid_request",
    "invalid_token",
)
RECOVERY_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/password/forgot"): {
        "tags": ["people"],
        "summary": "Ask for a password-reset message",
        "description": "The same 202 `{}`, in about the same time, for any well-formed email, "
        "with or without an account; a known, active user is sent a message whose link is "
        "built from PASSWORD_RESET_URL.",
        "requestBody": json_body(
            _object(email={"type": "string", "format": "email", "maxLength": 254})
        ),
        "responses": {
            202: ok("Accepted (whether or not a message is sent).", _EMPTY, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            422: error("Not one mailbox, or another field.", "invalid_input"),
            429: error(
                "Too many requests for this email or from this address in the window.",
                "too_many_attempts",
                headers={"Retry-After": {"schema": {"type": "integer"}}},
            ),
            **UNAVAILABLE,
        },
    },
    ("POST", "/password/reset"): {
        "tags": ["people"],
        "summary": "Set a new password with the token of a reset message",
        "description": "The token is spent, every session of the user is revoked, and every "
        "other reset token of theirs is superseded.",
        "requestBody": json_body(_object(token=_ACCOUNT_TOKEN, new_password=NEW_PASSWORD)),
        "responses": {
            204: ok("The password is changed."),
            **JSON_BODY_ERRORS,
            400: _BAD_ACCOUNT_TOKEN,
            422: error(
                "A weak new password, or a field missing or unexpected.",
                "invalid_input",
                "weak_password",
            ),
            **UNAVAILABLE_OR_HASHING_BUSY,
        },
    },
    ("POST", "/email/verification"): {
        "tags": ["people"],
        "summary": "Send the caller a verification message",
        "security": BEARER,
        "responses": {
            202: ok("A message is on its way.", _EMPTY, headers=NO_STORE),
            **BEARER_ERRORS,
            409: error("The email is verified already.", "already_verified"),
            429: error(
                "Too many messages asked for this email or from this address in the window"
                " (counted with /password/forgot).",
                "too_many_attempts",
                headers={"Retry-After": {"schema": {"type": "integer"}}},
            ),
            **UNAVAILABLE,
        },
    },
    ("POST", "/email/verify"): {
        "tags": ["people"],
        "summary": "Verify the email with the token of a verification message",
        "requestBody": json_body(_object(token=_ACCOUNT_TOKEN)),
        "responses": {
            204: ok("The email is verified."),
            **JSON_BODY_ERRORS,
            400: _BAD_ACCOUNT_TOKEN,
            422: error("A field missing, unexpected or not a string.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
    ("GET", "/dev/mailbox/latest"): {
        "tags": ["browser"],
        "summary": "Development only: the newest message of the development mailbox",
        "parameters": [
            {"name": "to", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "schema": {"type": "number", "minimum": 0, "maximum": 10},
            },
        ],
        "responses": {
            200: ok("The message: to, from, subject, date, text, html, link.", {"type": "object"}),
            404: error(
                "No such message yet, or not served (production, or SMTP_URL set).", "not_found"
            ),
            422: error("`wait` is not a number from 0 to 10.", "invalid_input"),
        },
    },
}
OPERATIONS.update(RECOVERY_OPERATIONS)
# -- the admin API (tokenrota_server.http.admin) -----------------------------------------------
# A client-credentials token with the admin scope, or an operator's (a person's token for the
# admin API's audience, aal2, recent), checked against the database on every call.
ADMIN_ERRORS = {
    401: error(
        "No bearer token (missing_token); an operator's token of a login without a second"
        " factor, or older than ADMIN_MAX_AUTH_AGE (insufficient_user_authentication, RFC 9470:"
        " the challenge names acr_values and max_age).",
        "missing_token",
        "insufficient_user_authentication",
        headers=CHALLENGE,
    ),
    403: error(
        "A token without the admin scope (insufficient_scope); an expired or revoked token, a"
        " client's that is disabled or no longer has admin, a person's not minted for the admin"
        " API's audience, delegated (act), of a disabled operator, an ended session or a role"
        " taken away (invalid_token, token_expired).",
        "insufficient_scope",
        "invalid_token",
        "token_expired",
        headers=CHALLENGE,
    ),
    **UNAVAILABLE,
}
NO_SUCH_USER = {404: error("No such user (or an id that is not a UUID).", "not_found")}
_ADMIN_USER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "email", "created_at", "disabled", "email_verified", "roles"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "email": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "disabled": {"type": "boolean"},
        "email_verified": {"type": "boolean"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "live_sessions": {"type": "integer"},
        "app_metadata": {"type": "object", "description": "Only when one user is shown."},
        "last_sign_in_at": {"type": ["string", "null"], "format": "date-time"},
        "sessions": {
            "type": "array",
            "description": "The live sessions; only at GET /admin/users/{user_id}.",
            "items": {"type": "object"},
        },
    },
}
_ROLE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "scopes", "created_at"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.:-]{0,63}$"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "require_mfa": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_RESOURCE_INPUT: dict[str, Any] = {
    "type": "object",
    "required": ["uri", "name"],
    "properties": {
        "uri": {"type": "string", "maxLength": 512, "description": "Absolute, no fragment."},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "access_token_ttl": {"type": ["integer", "null"], "minimum": 1},
    },
}
_RESOURCE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "uri", "name", "scopes", "access_token_ttl", "created_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        **_RESOURCE_INPUT["properties"],
        "created_at": {"type": "string", "format": "date-time"},
    },
}
NO_SUCH_RESOURCE = {404: error("No such resource (or an id that is not a UUID).", "not_found")}
_CURSOR = {"type": ["string", "null"], "description": "Pass as `cursor` for the next page."}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


# `format` names the cursor's grammar (docs/admin.md); the fuzzer generates cursors of it.
_PAGING_PARAMETERS = [
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
        "Rows per page.",
    ),
]
_USERS_CURSOR = _query(
    "cursor",
    {"type": "string", "format": "users-cursor", "maxLength": 512},
    "The `next_cursor` of the page before, for the same `email`.",
)
_AUDIT_CURSOR = _query(
    "cursor",
    {"type": "string", "format": "audit-cursor", "maxLength": 512},
    "The `next_cursor` of the page before, for the same filters.",
)
_PAGING_ERRORS = {
    400: error("A cursor that is not one of this query's.", "invalid_request"),
    422: error(
        "`limit` outside 1..100, or another bad parameter (a filter outside its grammar).",
        "invalid_input",
    ),
}
# A session as GET /sessions and the admin listing show it (`sessions.SessionInfo.to_json`).
SESSION_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"},
    "created_at": {"type": "string", "format": "date-time"},
    "last_used_at": {"type": "string", "format": "date-time"},
    "expires_at": {"type": "string", "format": "date-time"},
    "user_agent": {"type": ["string", "null"]},
    "ip": {"type": ["string", "null"]},
    "name": {"type": ["string", "null"], "maxLength": 100, "description": "The user's label"},
}
SESSION_REQUIRED = ["id", "created_at", "last_used_at", "expires_at", "name"]
_SESSIONS = {
    "type": "object",
    "required": ["sessions"],
    "properties": {
        "sessions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": SESSION_REQUIRED,
                "properties": SESSION_PROPERTIES,
            },
        }
    },
}


def _admin(summary: str, responses: dict[int, Any], **extra: Any) -> Operation:
    return {
        "tags": ["admin"],
        "summary": summary,
        "security": ADMIN_BEARER,
        **extra,
        "responses": {**responses, **ADMIN_ERRORS},
    }


OPERATIONS |= {
    ("GET", "/admin/users"): _admin(
        "A page of users, oldest first; `email` is a case-insensitive prefix",
        {
            200: ok(
                "Users and the next page's cursor.",
                {
                    "type": "object",
                    "required": ["users", "next_cursor"],
                    "properties": {
                        "users": {"type": "array", "items": _ADMIN_USER},
                        "next_cursor": _CURSOR,
                    },
                },
                headers=NO_STORE,
            ),
            **_PAGING_ERRORS,
        },
        parameters=[
            _query(
                "email",
                {"type": "string", "maxLength": 254},
                "A case-insensitive prefix of the email; printable characters only.",
            ),
            _USERS_CURSOR,
            *_PAGING_PARAMETERS,
        ],
    ),
    ("GET", "/admin/users/{user_id}"): _admin(
        "One user, with roles and live session count",
        {200: ok("The user.", _ADMIN_USER, headers=NO_STORE), **NO_SUCH_USER},
    ),
    ("DELETE", "/admin/users/{user_id}"): _admin(
        "Erase a user and everything that references them, in one transaction",
        {204: ok("Erased."), **NO_SUCH_USER},
    ),
    ("POST", "/admin/users/{user_id}/disable"): _admin(
        "Disable a user; every session ends now", {204: ok("Disabled."), **NO_SUCH_USER}
    ),
    ("POST", "/admin/users/{user_id}/enable"): _admin(
        "Enable a user again", {204: ok("Enabled."), **NO_SUCH_USER}
    ),
    ("PUT", "/admin/users/{user_id}/roles"): _admin(
        "Set the user's roles; effective at their next refresh",
        {
            200: ok("The user.", _ADMIN_USER, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            **NO_SUCH_USER,
            422: error("An unknown or malformed role name; nothing written.", "invalid_input"),
        },
        requestBody=json_body(
            {
                "type": "object",
                "required": ["roles"],
                "properties": {"roles": {"type": "array", "items": {"type": "string"}}},
            }
        ),
    ),
    ("GET", "/admin/users/{user_id}/sessions"): _admin(
        "The user's live sessions", {200: ok("Sessions.", _SESSIONS), **NO_SUCH_USER}
    ),
    ("DELETE", "/admin/users/{user_id}/sessions"): _admin(
        "Revoke every session of the user now", {204: ok("Revoked."), **NO_SUCH_USER}
    ),
    ("DELETE", "/admin/users/{user_id}/sessions/{session_id}"): _admin(
        "Revoke one session of the user now (a lost device)",
        {
            204: ok("Revoked."),
            404: error("No such user, or no such live session of theirs.", "not_found"),
        },
    ),
    ("GET", "/admin/users/{user_id}/factors"): _admin(
        "The user's live second factors",
        {
            200: ok(
                "Factors.",
                {
                    "type": "object",
                    "required": ["factors"],
                    "properties": {"factors": {"type": "array", "items": {"type": "object"}}},
                },
                headers=NO_STORE,
            ),
            **NO_SUCH_USER,
        },
    ),
    ("DELETE", "/admin/users/{user_id}/factors/{factor_id}"): _admin(
        "Remove a user's factor (a lost phone); every session of the user is revoked",
        {204: ok("Removed."), 404: error("No such user or factor.", "not_found")},
    ),
    ("GET", "/admin/roles"): _admin(
        "Every role and its scopes",
        {
            200: ok(
                "Roles.",
                {
                    "type": "object",
                    "required": ["roles"],
                    "properties": {"roles": {"type": "array", "items": _ROLE}},
                },
            )
        },
    ),
    ("PUT", "/admin/roles/{name}"): _admin(
        "Create a role or replace its scopes",
        {
            200: ok("Replaced.", _ROLE),
            201: ok("Created.", _ROLE),
            **JSON_BODY_ERRORS,
            422: error(
                "A malformed role name, or a scope that is not an RFC 6749 scope-token.",
                "invalid_input",
            ),
        },
        requestBody=json_body(
            {
                "type": "object",
                "required": ["scopes"],
                "properties": {
                    "scopes": {"type": "array", "items": {"type": "string"}},
                    "require_mfa": {
                        "type": "boolean",
                        "default": False,
                        "description": "Its scopes only in aal2 tokens (a second factor).",
                    },
                },
                "additionalProperties": False,
            }
        ),
    ),
    ("DELETE", "/admin/roles/{name}"): _admin(
        "Delete a role nobody holds",
        {
            204: ok("Deleted."),
            404: error("No such role.", "not_found"),
            409: error("A user holds the role.", "role_in_use"),
        },
    ),
    ("GET", "/admin/resources"): _admin(
        "Every resource (RFC 8707), by URI",
        {
            200: ok(
                "Resources.",
                {
                    "type": "object",
                    "required": ["resources"],
                    "properties": {"resources": {"type": "array", "items": _RESOURCE}},
                },
            )
        },
    ),
    ("POST", "/admin/resources"): _admin(
        "Register a resource: tokens asked for with `resource` = its URI are for it alone",
        {
            201: ok("Created.", _RESOURCE),
            **JSON_BODY_ERRORS,
            422: error(
                "A URI that is not absolute, has a fragment or is taken; a blank name; a bad"
                " scope; a lifetime outside 1..ACCESS_TOKEN_TTL; an unknown field.",
                "invalid_input",
            ),
        },
        requestBody=json_body(_RESOURCE_INPUT),
    ),
    ("GET", "/admin/resources/{resource_id}"): _admin(
        "One resource", {200: ok("The resource.", _RESOURCE), **NO_SUCH_RESOURCE}
    ),
    ("PATCH", "/admin/resources/{resource_id}"): _admin(
        "Change a resource's name, scopes or lifetime (never its URI)",
        {
            200: ok("Changed.", _RESOURCE),
            **JSON_BODY_ERRORS,
            **NO_SUCH_RESOURCE,
            422: error("A bad field, or `uri`.", "invalid_input"),
        },
        requestBody=json_body({k: v for k, v in _RESOURCE_INPUT.items() if k != "required"}),
    ),
    ("DELETE", "/admin/resources/{resource_id}"): _admin(
        "Delete a resource and every client's grant to it",
        {204: ok("Deleted."), **NO_SUCH_RESOURCE},
    ),
    ("GET", "/admin/audit"): _admin(
        "A page of the audit log, newest first; `user_id`, `actor`, `action`, `after` and"
        " `before` narrow it",
        {
            200: ok(
                "Events and the next page's cursor.",
                {
                    "type": "object",
                    "required": ["events", "next_cursor"],
                    "properties": {
                        "events": {"type": "array", "items": {"type": "object"}},
                        "next_cursor": _CURSOR,
                    },
                },
                headers=NO_STORE,
            ),
            **_PAGING_ERRORS,
        },
        parameters=[
            _query("user_id", {"type": "string", "format": "uuid"}, "Only this user's events."),
            _query(
                "actor",
                {"type": "string", "minLength": 1, "maxLength": 200},
                "Only this actor's events: client:<client_id>, user:<id>, cli or system.",
            ),
            _query("action", {"type": "string"}, "Only events of this action (docs/admin.md)."),
            _query(
                "after",
                {"type": "string", "format": "date-time", "maxLength": 40},
                "Only events at or after this time (RFC 3339, with an offset).",
            ),
            _query(
                "before",
                {"type": "string", "format": "date-time", "maxLength": 40},
                "Only events before this time (RFC 3339, with an offset).",
            ),
            _AUDIT_CURSOR,
            *_PAGING_PARAMETERS,
        ],
    ),
}


# -- second factors -----------------------------------------------------------------------------

_FACTOR = {
    "type": "object",
    "required": ["id", "type", "name", "created_at", "last_used_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string", "enum": ["totp", "passkey"]},
        "name": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_RECOVERY_CODES = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$"},
    "minItems": 10,
    "maxItems": 10,
}
_TOTP_CODE = {"type": "string", "pattern": "^[0-9]{6}$", "description": "A 6-digit TOTP code."}
_SECOND_FACTOR = {
    "code": _TOTP_CODE,
    "recovery_code": {
        "type": "string",
        "maxLength": 64,
        "description": "A recovery code; case, spaces and hyphens are ignored.",
    },
    "credential": {
        "type": "object",
        "description": "A passkey's assertion: the browser's PublicKeyCredential as JSON, for"
        " options from /passkeys/login/options.",
    },
    "use_cookie": {"type": "boolean", "default": False},
}
_ONE_FACTOR = [
    {"required": ["code"]},
    {"required": ["recovery_code"]},
    {"required": ["credential"]},
]
# RFC 9470: the management endpoints want a recent login, and aal2 once a factor exists.
_NOT_RECENT = {
    401: error(
        "No bearer token, or the login is older than MFA_MANAGE_MAX_AGE or (once a factor"
        " exists) not aal2: authenticate again, or step up at /mfa/challenge.",
        "missing_token",
        "insufficient_user_authentication",
        headers=CHALLENGE,
    ),
}
_WRONG_CODE = {
    401: error("The code is wrong (one answer for every kind of wrong).", "invalid_code"),
    429: error(
        "Too many wrong codes for this user (MFA_USER_MAX_ATTEMPTS) or this mfa_token"
        " (MFA_TOKEN_MAX_ATTEMPTS) in the window.",
        "too_many_attempts",
        headers=RETRY_AFTER,
    ),
}
_NO_FACTOR = {404: error("No such factor of the caller's.", "not_found")}
_MFA_BEARER_ERRORS = {**BEARER_ERRORS, **_NOT_RECENT}

OPERATIONS |= {
    ("GET", "/mfa/factors"): {
        "tags": ["mfa"],
        "summary": "The caller's live second factors",
        "security": BEARER,
        "responses": {
            200: ok(
                "The factors.",
                _object(factors={"type": "array", "items": _FACTOR}),
                headers=NO_STORE,
            ),
            **BEARER_ERRORS,
            **UNAVAILABLE,
        },
    },
    ("POST", "/mfa/totp"): {
        "tags": ["mfa"],
        "summary": "Enrol a TOTP factor: its secret, otpauth:// URI and QR code (shown once)",
        "description": "The factor is live only once a first code is verified.",
        "security": BEARER,
        "requestBody": json_body(
            {
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
                "additionalProperties": False,
            },
            required=False,
        ),
        "responses": {
            201: ok(
                "Enrolled, pending its first code.",
                _object(
                    factor_id={"type": "string", "format": "uuid"},
                    secret={"type": "string", "pattern": "^[A-Z2-7]{32}$"},
                    otpauth_uri={"type": "string"},
                    qr_svg={"type": "string"},
                ),
                headers=NO_STORE,
            ),
            **JSON_BODY_ERRORS,
            **_MFA_BEARER_ERRORS,
            422: error("A name that is not 1 to 64 printable characters.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
    ("POST", "/mfa/totp/{factor_id}/verify"): {
        "tags": ["mfa"],
        "summary": "Make a TOTP factor live with its first code",
        "description": "With the user's first factor come 10 recovery codes, shown once.",
        "security": BEARER,
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["code"],
                "properties": {"code": _TOTP_CODE},
                "additionalProperties": False,
            }
        ),
        "responses": {
            200: ok(
                "Live.",
                {
                    "type": "object",
                    "required": ["factor"],
                    "properties": {"factor": _FACTOR, "recovery_codes": _RECOVERY_CODES},
                },
                headers=NO_STORE,
            ),
            **JSON_BODY_ERRORS,
            **BEARER_ERRORS,
            401: error(
                "No token, a login not recent enough, or a wrong code.",
                "missing_token",
                "insufficient_user_authentication",
                "invalid_code",
                headers=CHALLENGE,
            ),
            **_NO_FACTOR,
            422: error("No code, or another field.", "invalid_input"),
            429: _WRONG_CODE[429],
            **UNAVAILABLE,
        },
    },
    ("POST", "/mfa/recovery-codes"): {
        "tags": ["mfa"],
        "summary": "A new set of 10 recovery codes; every older one dies",
        "security": BEARER,
        "responses": {
            200: ok(
                "The codes, shown once.", _object(recovery_codes=_RECOVERY_CODES), headers=NO_STORE
            ),
            **_MFA_BEARER_ERRORS,
            422: error("The caller has no live factor.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
    ("DELETE", "/mfa/factors/{factor_id}"): {
        "tags": ["mfa"],
        "summary": "Remove one of the caller's factors (with the last, the recovery codes go)",
        "security": BEARER,
        "responses": {204: ok("Removed."), **_MFA_BEARER_ERRORS, **_NO_FACTOR, **UNAVAILABLE},
    },
    ("POST", "/login/mfa"): {
        "tags": ["people"],
        "summary": "Complete a login that /login answered with mfa_required",
        "description": "Exactly one of `code`, `recovery_code` or `credential` (a passkey's"
        " assertion); the mfa_token is spent with the first right one. With `use_cookie`, as at"
        " /login.",
        "parameters": [DPOP_HEADER],
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["mfa_token"],
                "properties": {
                    "mfa_token": {"type": "string", "maxLength": 128},
                    "resource": {"$ref": "#/components/schemas/Resource"},
                    **_SECOND_FACTOR,
                },
                "oneOf": _ONE_FACTOR,
                "additionalProperties": False,
            }
        ),
        "responses": {
            200: ok("The new session's token pair, at aal2.", ref("TokenPair"), headers=NO_STORE),
            **JSON_BODY_OR_PROOF_ERRORS,
            400: error(
                "The body is not a JSON object, has an unknown field, `resource` is not one"
                " registered absolute URI, the DPoP proof is refused (`use_dpop_nonce` with"
                " DPOP_NONCE), or the passkey's assertion is refused (one answer for every"
                " reason).",
                "invalid_request",
                "invalid_target",
                "invalid_dpop_proof",
                "use_dpop_nonce",
                "invalid_passkey",
            ),
            401: error(
                "A wrong code, or an mfa_token unknown, spent or expired (log in again).",
                "invalid_code",
                "invalid_token",
            ),
            422: error(
                "No mfa_token, not exactly one factor, or a field of the wrong type.",
                "invalid_input",
            ),
            429: _WRONG_CODE[429],
            **UNAVAILABLE,
        },
    },
    ("POST", "/mfa/challenge"): {
        "tags": ["mfa"],
        "summary": "Step up: a second factor raises the bearer's session to aal2",
        "description": "Answers a new pair for the same session; with `use_cookie`, the"
        " refresh token goes in the cookie.",
        "security": BEARER,
        "requestBody": json_body(
            {
                "type": "object",
                "properties": _SECOND_FACTOR,
                "oneOf": _ONE_FACTOR,
                "additionalProperties": False,
            }
        ),
        "responses": {
            200: ok("The session's new pair, at aal2.", ref("TokenPair"), headers=NO_STORE),
            **JSON_BODY_ERRORS,
            400: error(
                "The body is not a JSON object, has an unknown field, or the passkey's assertion"
                " is refused.",
                "invalid_request",
                "invalid_passkey",
            ),
            **BEARER_ERRORS,
            401: error(
                "No bearer token, or a wrong code.",
                "missing_token",
                "invalid_code",
                headers=CHALLENGE,
            ),
            422: error("Not exactly one factor, or a field of the wrong type.", "invalid_input"),
            429: _WRONG_CODE[429],
            **UNAVAILABLE,
        },
    },
}

# A PublicKeyCredential as JSON (WebAuthn L3 §5.1.8 toJSON): py_webauthn reads it.
_CREDENTIAL = {
    "type": "object",
    "required": ["id", "rawId", "type", "response"],
    "description": "The browser's PublicKeyCredential, its binary fields in base64url.",
}
_PASSKEY_FACTOR = {
    "type": "object",
    "required": ["factor"],
    "properties": {"factor": {"type": "object"}},
}
OPERATIONS |= {
    ("POST", "/passkeys/register/options"): {
        "tags": ["people"],
        "summary": "Creation options for a new passkey of the bearer's user",
        "description": "Pass them to `navigator.credentials.create` (after decoding the "
        "base64url fields); the challenge is single-use and lives two minutes.",
        "security": BEARER,
        "responses": {
            200: ok("PublicKeyCredentialCreationOptions as JSON.", {"type": "object"}),
            **BEARER_ERRORS,
            **UNAVAILABLE,
        },
    },
    ("POST", "/passkeys/register"): {
        "tags": ["people"],
        "summary": "Register a passkey as a factor",
        "security": BEARER,
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["credential"],
                "properties": {
                    "credential": _CREDENTIAL,
                    "name": {"type": "string", "minLength": 1, "maxLength": 64},
                },
            }
        ),
        "responses": {
            201: ok("The new factor.", _PASSKEY_FACTOR),
            **JSON_BODY_ERRORS,
            **BEARER_ERRORS,
            400: error(
                "The body is not a JSON object, or the creation response is refused (malformed,"
                " a challenge used or expired, another origin or RP id): one answer for every"
                " reason.",
                "invalid_request",
                "invalid_passkey",
            ),
            422: error(
                "No credential object, or a name that is not 1 to 64 characters.", "invalid_input"
            ),
            **UNAVAILABLE,
        },
    },
    ("POST", "/passkeys/login"): {
        "tags": ["people"],
        "summary": "Sign in with a discoverable passkey alone: a token pair at aal2",
        "description": "The authenticator must have verified the user. With `use_cookie`, the "
        "refresh token is set in the `__Host-refresh_token` cookie, as at /login; a DPoP proof "
        "binds the session.",
        "parameters": [DPOP_HEADER],
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["credential"],
                "properties": {
                    "credential": _CREDENTIAL,
                    "use_cookie": {"type": "boolean"},
                    "remember": {"type": "boolean"},
                    "resource": {"$ref": "#/components/schemas/Resource"},
                },
            }
        ),
        "responses": {
            200: ok("A new session's token pair.", ref("TokenPair"), headers=NO_STORE),
            **JSON_BODY_OR_PROOF_ERRORS,
            400: error(
                "The body is not a JSON object, the DPoP proof is refused, `resource` is not one"
                " registered absolute URI, or the assertion is refused (one answer for every"
                " reason).",
                "invalid_request",
                "invalid_dpop_proof",
                "use_dpop_nonce",
                "invalid_target",
                "invalid_passkey",
            ),
            403: error(
                "REQUIRE_VERIFIED_EMAIL and the passkey's user has not verified the email.",
                "email_unverified",
            ),
            422: error("No credential object, or `remember` not a boolean.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
    ("POST", "/passkeys/login/options"): {
        "tags": ["people"],
        "summary": "Request options for signing in with a passkey",
        "description": "Any discoverable passkey of this site; `email` is accepted and changes "
        "nothing (no answer tells whether an email has passkeys). The challenge is single-use and"
        " lives two minutes. Each request writes one, so requests are counted per client address"
        " (PASSKEY_OPTIONS_IP_MAX_ATTEMPTS per throttle window).",
        "requestBody": json_body(
            {
                "type": "object",
                "properties": {"email": {"type": "string", "format": "email", "maxLength": 254}},
            },
            required=False,
        ),
        "responses": {
            200: ok("PublicKeyCredentialRequestOptions as JSON.", {"type": "object"}),
            **JSON_BODY_ERRORS,
            422: error("`email` is not a string.", "invalid_input"),
            429: error(
                "Too many requests for options from this address in the window"
                " (PASSKEY_OPTIONS_IP_MAX_ATTEMPTS).",
                "too_many_attempts",
                headers={"Retry-After": {"schema": {"type": "integer"}}},
            ),
            **UNAVAILABLE,
        },
    },
}

# -- OAuth clients in the admin API (tokenrota_server.http.oauth_clients) ----------------------
NO_SUCH_CLIENT = {404: error("No such client (or a malformed id).", "not_found")}
_CLIENT_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_SCOPE_LIST = {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 128}}
_MANAGED_CLIENT: dict[str, Any] = {
    "type": "object",
    "required": [
        "client_id",
        "name",
        "scopes",
        "created_at",
        "disabled",
        "disabled_at",
        "previous_secret_expires_at",
    ],
    "properties": {
        "client_id": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "created_at": {"type": "string", "format": "date-time"},
        "disabled": {"type": "boolean"},
        "disabled_at": {"type": ["string", "null"], "format": "date-time"},
        "previous_secret_expires_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "Until when the secret before the last rotation still works.",
        },
        "dpop_bound_access_tokens": {
            "type": "boolean",
            "description": "Its token requests need a DPoP proof (RFC 9449 §5.2).",
        },
    },
}
_DPOP_FLAG = {"type": "boolean", "description": "Token requests need a DPoP proof (RFC 9449 §5.2)."}
_GRANT_KINDS = ["token", "exchange", "serves"]
_CLIENT_GRANT: dict[str, Any] = {
    "type": "object",
    "required": ["client_id", "resource", "resource_id", "kind", "scopes"],
    "properties": {
        "client_id": {"type": "string"},
        "resource": {"type": "string", "description": "The resource's URI."},
        "resource_id": {"type": "string", "format": "uuid"},
        "kind": {"type": "string", "enum": _GRANT_KINDS},
        "scopes": {"type": "array", "items": {"type": "string"}},
    },
}
NO_SUCH_GRANT_TARGET = {
    404: error(
        "No such client, resource or grant kind (or a malformed id); at DELETE, no such grant.",
        "not_found",
    )
}
_CLIENT_WITH_SECRET: dict[str, Any] = {
    "allOf": [
        _MANAGED_CLIENT,
        {
            "type": "object",
            "required": ["client_secret"],
            "properties": {"client_secret": {"type": "string", "description": "Shown once."}},
        },
    ]
}
_CLIENTS_CURSOR = _query(
    "cursor",
    {"type": "string", "format": "clients-cursor", "maxLength": 512},
    "The `next_cursor` of the page before.",
)
OPERATIONS |= {
    ("GET", "/admin/clients"): _admin(
        "A page of OAuth clients, oldest first; never a secret",
        {
            200: ok(
                "Clients and the next page's cursor.",
                {
                    "type": "object",
                    "required": ["clients", "next_cursor"],
                    "properties": {
                        "clients": {"type": "array", "items": _MANAGED_CLIENT},
                        "next_cursor": _CURSOR,
                    },
                },
                headers=NO_STORE,
            ),
            **_PAGING_ERRORS,
        },
        parameters=[_CLIENTS_CURSOR, *_PAGING_PARAMETERS],
    ),
    ("POST", "/admin/clients"): _admin(
        "Register an OAuth client; its secret is in this answer and nowhere else",
        {
            201: ok("The client and its secret.", _CLIENT_WITH_SECRET, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            422: error(
                "A name that is not 1 to 100 printable characters, a scope that is not an RFC"
                " 6749 scope-token, `dpop_bound_access_tokens` not a boolean, or another key;"
                " nothing written.",
                "invalid_input",
            ),
            **UNAVAILABLE_OR_HASHING_BUSY,
        },
        requestBody=json_body(
            {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": _CLIENT_NAME,
                    "scopes": _SCOPE_LIST,
                    "dpop_bound_access_tokens": _DPOP_FLAG,
                },
            }
        ),
    ),
    ("GET", "/admin/clients/{client_id}"): _admin(
        "One OAuth client; never its secret",
        {200: ok("The client.", _MANAGED_CLIENT, headers=NO_STORE), **NO_SUCH_CLIENT},
    ),
    ("PATCH", "/admin/clients/{client_id}"): _admin(
        "Rename a client, set its scopes, disable or enable it (disabling refuses its tokens"
        " now and names it in the revocation feed), require DPoP of its token requests or not",
        {
            200: ok("The client.", _MANAGED_CLIENT, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            **NO_SUCH_CLIENT,
            422: error("No field, a bad field or another key; nothing written.", "invalid_input"),
        },
        requestBody=json_body(
            {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": {
                    "name": _CLIENT_NAME,
                    "scopes": _SCOPE_LIST,
                    "disabled": {"type": "boolean"},
                    "dpop_bound_access_tokens": _DPOP_FLAG,
                },
            }
        ),
    ),
    ("DELETE", "/admin/clients/{client_id}"): _admin(
        "Delete a client; its tokens are refused now and the revocation feed names it",
        {204: ok("Deleted."), **NO_SUCH_CLIENT},
    ),
    ("POST", "/admin/clients/{client_id}/secret"): _admin(
        "Give an enabled client a new secret, shown once; the old one works `grace_seconds`"
        " more (default 0, at most 604800)",
        {
            200: ok("The client and its new secret.", _CLIENT_WITH_SECRET, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            404: error("No such enabled client.", "not_found"),
            422: error("`grace_seconds` outside 0..604800, or another key.", "invalid_input"),
            **UNAVAILABLE_OR_HASHING_BUSY,
        },
        requestBody=json_body(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "grace_seconds": {"type": "integer", "minimum": 0, "maximum": 604800}
                },
            },
            required=False,
        ),
    ),
}

OPERATIONS |= {
    ("GET", "/admin/clients/{client_id}/grants"): _admin(
        "A client's grants to resources, by resource URI and kind",
        {
            200: ok(
                "The grants.",
                {
                    "type": "object",
                    "required": ["grants"],
                    "properties": {"grants": {"type": "array", "items": _CLIENT_GRANT}},
                },
                headers=NO_STORE,
            ),
            **NO_SUCH_CLIENT,
        },
    ),
    ("PUT", "/admin/clients/{client_id}/grants/{resource_id}/{kind}"): _admin(
        "Grant a client a kind of use of a resource (`token`: client_credentials with"
        " `resource`; `exchange`: token exchange toward it; `serves`: the client is that API),"
        " with scopes the resource defines; a grant of that kind already there has its scopes"
        " replaced",
        {
            200: ok("The grant.", _CLIENT_GRANT, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            **NO_SUCH_GRANT_TARGET,
            422: error(
                "A scope the resource does not define, scopes for `serves`, a scope that is not"
                " a scope-token, or another key; nothing written.",
                "invalid_input",
            ),
        },
        requestBody=json_body(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"scopes": _SCOPE_LIST},
            },
            required=False,
        ),
    ),
    ("DELETE", "/admin/clients/{client_id}/grants/{resource_id}/{kind}"): _admin(
        "Take a client's grant back; tokens already minted under it live out their lifetime",
        {204: ok("Taken back."), **NO_SUCH_GRANT_TARGET},
    ),
}

# -- operators' account actions (tokenrota_server.http.admin_accounts) -------------------------
OPERATIONS |= {
    ("POST", "/admin/users"): _admin(
        "Create a user (with no usable password); with `invite`, mail a link to choose one,"
        " which also verifies the email (INVITATION_TTL, spent at /password/reset)",
        {
            201: ok("The user.", _ADMIN_USER, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            409: error("An account has this email, in any letter case.", "email_taken"),
            422: error(
                "An email that is not one mailbox, an unknown or malformed role, a field of"
                " another type, or another key; nothing written.",
                "invalid_input",
            ),
            **UNAVAILABLE_OR_HASHING_BUSY,
        },
        requestBody=json_body(
            {
                "type": "object",
                "required": ["email"],
                "additionalProperties": False,
                "properties": {
                    "email": {"type": "string", "maxLength": 254},
                    "invite": {"type": "boolean", "default": False},
                    "roles": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
                },
            }
        ),
    ),
    ("POST", "/admin/users/{user_id}/password-reset"): _admin(
        "Mail the user a password-reset link (superseding their earlier ones)",
        {
            202: ok("Queued.", {"type": "object"}),
            **NO_SUCH_USER,
            422: error("The user is disabled.", "invalid_input"),
        },
    ),
    ("POST", "/admin/users/{user_id}/verification"): _admin(
        "Mail the user an email-verification link",
        {
            202: ok("Queued.", {"type": "object"}),
            **NO_SUCH_USER,
            409: error("The email is verified already.", "already_verified"),
            422: error("The user is disabled.", "invalid_input"),
        },
    ),
}

# -- users' metadata (tokenrota_server.http.metadata) -----------------------------------------
_METADATA = {
    "type": "object",
    "description": "A JSON object of at most 4096 bytes as compact UTF-8 JSON, nesting objects"
    " and arrays at most 4 levels deep (itself included); no string with NUL.",
}
_PROFILE_WITH_METADATA = {
    "type": "object",
    "required": ["user"],
    "properties": {
        "user": {
            "allOf": [
                {"$ref": "#/components/schemas/UserEnvelope/properties/user"},
                {
                    "type": "object",
                    "required": ["user_metadata"],
                    "properties": {"user_metadata": _METADATA},
                },
            ]
        }
    },
}
OPERATIONS[("GET", "/profile")]["responses"][200] = ok("The user.", _PROFILE_WITH_METADATA)
OPERATIONS |= {
    ("PATCH", "/admin/users/{user_id}"): _admin(
        "Replace the user's app_metadata (keys chosen by TOKEN_CLAIMS_FROM_APP_METADATA become"
        " access-token claims from their next refresh)",
        {
            200: ok("The user.", _ADMIN_USER, headers=NO_STORE),
            **JSON_BODY_ERRORS,
            **NO_SUCH_USER,
            422: error(
                "Not an object, over the caps, a key named like a registered claim (sub, aud,"
                " scope, ...), or another body key; nothing written.",
                "invalid_input",
            ),
        },
        requestBody=json_body(
            {
                "type": "object",
                "required": ["app_metadata"],
                "additionalProperties": False,
                "properties": {"app_metadata": _METADATA},
            }
        ),
    ),
    ("PATCH", "/profile"): {
        "tags": ["people"],
        "summary": "Replace the caller's own user_metadata (never in a token)",
        "security": BEARER,
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["user_metadata"],
                "additionalProperties": False,
                "properties": {"user_metadata": _METADATA},
            }
        ),
        "responses": {
            200: ok("The user with it.", _PROFILE_WITH_METADATA),
            **JSON_BODY_ERRORS,
            **BEARER_ERRORS,
            404: error("The user was erased during the call.", "not_found"),
            422: error("Not an object, over the caps, or another key.", "invalid_input"),
            **UNAVAILABLE,
        },
    },
}
