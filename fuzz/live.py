"""Live requests for the fuzzer: every other positive case of the operations below is sent with
what no schema can spell (a real resource, a fresh refresh or mfa token, the code a live TOTP
factor shows now, a passkey's signature over a fresh challenge), so each operation answers with
its success too, not only with refusals of generated values. The rest go as generated.

The values come from the running instance, asked over HTTP when a case needs one; the accounts
are made by `python -m fuzz`, which passes them in the environment (fuzz/__main__.py).
"""

from __future__ import annotations

import collections
import functools
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from tokenrota_server import totp

from tests.passkey_support import ORIGIN, SoftAuthenticator

# Scopes the run's resource defines and grants its client (`python -m fuzz`).
RESOURCE_SCOPE = "read"
PASSKEY_ORIGIN = ORIGIN  # the instance lists it in WEBAUTHN_ORIGINS


def _environment(name: str) -> str:
    return os.environ[name]


@functools.cache
def _http() -> httpx.Client:
    return httpx.Client(base_url=_environment("FUZZ_SERVICE_URL"), timeout=30)


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {_environment('FUZZ_USER_TOKEN')}"}


def _login(email: str, password: str) -> httpx.Response:
    return _http().post("/login", json={"email": email, "password": password})


# The last TOTP step spent per secret: a code is accepted once, within a step of now.
_spent_steps: dict[str, int] = {}


def _totp_code(secret_variable: str, spent_variable: str) -> str | None:
    """A code of the factor not accepted yet (this step's or the next's), or None until one
    is: a code the service has taken once is refused, which is no success."""
    secret = _environment(secret_variable)
    spent = _spent_steps.get(secret, int(_environment(spent_variable)))
    now = totp.step_of(datetime.now(UTC))
    step = max(now - 1, spent + 1)
    if step > now + 1:
        return None
    _spent_steps[secret] = step
    return totp.code_at(secret, step)


def _login_body(body: dict[str, Any]) -> dict[str, Any] | None:
    resource = {"resource": _environment("FUZZ_RESOURCE")} if "resource" in body else {}
    email, password = _environment("FUZZ_LOGIN_EMAIL"), _environment("FUZZ_LOGIN_PASSWORD")
    return {**body, "email": email, "password": password, **resource}


def _refresh_body(body: dict[str, Any]) -> dict[str, Any] | None:
    answer = _login(_environment("FUZZ_LOGIN_EMAIL"), _environment("FUZZ_LOGIN_PASSWORD"))
    answer.raise_for_status()
    return {"refresh_token": answer.json()["refresh_token"]}


def _token_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """client_credentials for the run's client: its own scope, or the resource it may use."""
    if "resource" in body:
        return {
            "grant_type": "client_credentials",
            "resource": _environment("FUZZ_RESOURCE"),
            "scope": RESOURCE_SCOPE,
        }
    return {"grant_type": "client_credentials", "scope": _environment("FUZZ_CLIENT_SCOPE")}


def _login_mfa_body(body: dict[str, Any]) -> dict[str, Any] | None:
    code = _totp_code("FUZZ_MFA_SECRET", "FUZZ_MFA_SPENT_STEP")
    if code is None:
        return None
    started = _login(_environment("FUZZ_MFA_EMAIL"), _environment("FUZZ_MFA_PASSWORD")).json()
    return {"mfa_token": started["mfa_token"], "code": code} if "mfa_token" in started else None


def _challenge_body(body: dict[str, Any]) -> dict[str, Any] | None:
    code = _totp_code("FUZZ_USER_TOTP_SECRET", "FUZZ_USER_SPENT_STEP")
    return None if code is None else {"code": code}


def _new_resource_body(body: dict[str, Any]) -> dict[str, Any] | None:
    uri = f"https://{uuid.uuid4().hex}.fuzz.example"
    return {"uri": uri, "name": "a fuzzed resource", "scopes": [RESOURCE_SCOPE]}


def _new_user_body(body: dict[str, Any]) -> dict[str, Any] | None:
    return {"email": f"fuzz-{uuid.uuid4().hex}@example.com"}


def _register_passkey_body(body: dict[str, Any]) -> dict[str, Any] | None:
    return {"credential": _new_passkey(SoftAuthenticator()), "name": "a fuzzed passkey"}


def _new_passkey(authenticator: SoftAuthenticator) -> dict[str, Any]:
    """A creation response for the fuzzer's user, over options the service just gave."""
    options = _http().post("/passkeys/register/options", headers=_bearer())
    options.raise_for_status()
    return authenticator.create(options.json(), origin=PASSKEY_ORIGIN)


@functools.cache
def _signing_passkey() -> SoftAuthenticator:
    """A passkey of the fuzzer's user, registered once, to sign in with."""
    authenticator = SoftAuthenticator()
    credential = _new_passkey(authenticator)
    registered = _http().post(
        "/passkeys/register", json={"credential": credential}, headers=_bearer()
    )
    registered.raise_for_status()
    return authenticator


def _passkey_login_body(body: dict[str, Any]) -> dict[str, Any] | None:
    authenticator = _signing_passkey()
    options = _http().post("/passkeys/login/options")
    options.raise_for_status()
    return {"credential": authenticator.get(options.json(), origin=PASSKEY_ORIGIN)}


LIVE_BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    ("POST", "/login"): _login_body,
    ("POST", "/refresh"): _refresh_body,
    ("POST", "/oauth/token"): _token_body,
    ("POST", "/login/mfa"): _login_mfa_body,
    ("POST", "/mfa/challenge"): _challenge_body,
    ("POST", "/admin/resources"): _new_resource_body,
    ("POST", "/admin/users"): _new_user_body,
    ("POST", "/passkeys/register"): _register_passkey_body,
    ("POST", "/passkeys/login"): _passkey_login_body,
}
_seen: collections.Counter[tuple[str, str, str]] = collections.Counter()


def live_body(operation: tuple[str, str], phase: str, body: object) -> dict[str, Any] | None:
    """The live body for every other positive case of `operation` in a `phase`, its first
    included (None: send it as drawn). Per phase, since schemathesis judges each phase's
    answers apart, and a phase may draw a single positive case."""
    make = LIVE_BODIES.get(operation)
    if make is None or not isinstance(body, dict):
        return None
    _seen[(*operation, phase)] += 1
    if _seen[(*operation, phase)] % 2 == 0:
        return None
    try:
        return make(body)
    except (httpx.HTTPError, KeyError, ValueError):
        # The instance would not give one (the bearer's session ended by a fuzzed logout,
        # say): the case goes as drawn rather than as an error of the run.
        return None
