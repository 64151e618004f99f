"""How a use case ended, as typed values: what metrics count and security logs carry.

Use cases record these on the request they serve (`telemetry.record`); `metrics` reads them
from there, never from the route a request took. Each value is a label value of a public
metric (dashboards use them), so the values never change; a new outcome is a new member.
"""

from __future__ import annotations

from enum import StrEnum


class LoginOutcome(StrEnum):
    """How a login attempt ended (`token_service_logins_total{outcome}`)."""

    SUCCESS = "success"
    # Wrong credentials, an unknown email or a disabled user: one answer for all three.
    FAILURE = "failure"
    THROTTLED = "throttled"
    # The request itself was bad (its body, a field): no credentials were checked.
    REJECTED = "rejected"
    # The password was right; the user has a second factor, asked for at /login/mfa.
    MFA_REQUIRED = "mfa_required"


class RefreshOutcome(StrEnum):
    """How a refresh attempt ended (`token_service_refreshes_total{outcome}`)."""

    ROTATED = "rotated"
    # The same child again: a retry or a lost race within REFRESH_REUSE_INTERVAL.
    GRACE = "grace"
    # A spent token replayed after the grace window: its session was revoked.
    REUSE_DETECTED = "reuse_detected"
    INVALID = "invalid"
    # ROTATE_REFRESH_TOKENS is off: the token was accepted and kept.
    UNROTATED = "unrotated"


class Grant(StrEnum):
    """How an access token was obtained (`token_service_tokens_issued_total{grant}`)."""

    LOGIN = "login"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant's name, not a secret
    CLIENT_CREDENTIALS = "client_credentials"
    # A session raised to aal2 by a second factor (POST /mfa/challenge).
    STEP_UP = "step_up"
