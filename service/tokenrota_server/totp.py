"""TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps) with pyotp, and its enrolment's QR code.

Pure: no I/O, no clock (callers pass `now`). A code is checked against the step of `now` and
one step each way, every candidate computed and compared whatever the code is, so that a wrong,
malformed, replayed or drifted code costs the same work (see `matching_step`).
"""

from __future__ import annotations

import io
import secrets
from datetime import datetime

import pyotp
import segno

DIGITS = 6
STEP_SECONDS = 30
# RFC 6238 §5.2: one step of drift each way covers a clock a little off and a slow typist.
DRIFT_STEPS = 1
# 160 bits, the size RFC 4226 §4 recommends for SHA-1's key.
SECRET_BYTES = 20
# A code that is no code at all is compared as this, so it takes the same path as a wrong one.
_NEVER = "-" * DIGITS


def new_secret() -> str:
    """A fresh random secret, base32 as authenticator apps take it."""
    return pyotp.random_base32(length=SECRET_BYTES * 8 // 5)


def step_of(now: datetime) -> int:
    """The TOTP time step (counter) of `now`."""
    return int(now.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    """The code of `secret` at time step `step`."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def is_code_shaped(code: str) -> bool:
    """Whether `code` is six ASCII digits: the grammar of a TOTP code."""
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The step within the drift window whose code is `code`; None if there is none. Whether
    that step is later than the last one accepted is the database's compare-and-set to decide
    (`db.factors.spend`), so that two requests racing with one code cannot both win.

    Every candidate is computed and compared in constant time, whether or not `code` is shaped
    like a code and whether or not an earlier candidate matched.
    """
    presented = code if is_code_shaped(code) else _NEVER
    current = step_of(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        matches = secrets.compare_digest(code_at(secret, step).encode(), presented.encode())
        if matches and found is None:
            found = step
    return found


def otpauth_uri(secret: str, *, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI (Key Uri Format) an authenticator app enrols from."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The URI as a QR code, a standalone SVG document (no XML declaration)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False, svgns=True)
    return out.getvalue().decode("ascii")
