"""Live requests for the fuzzer: every other positive case of the operations below is sent with
what no schema can spell (a real resource, a fresh refresh or mfa token, the code a live TOTP
factor shows now, a passkey's signature over a fresh challenge), so each operation answers with
its success too, not only with refusals of generated values. The rest go as generated.

The values come from the running instance, asked over HTTP when a case needs one; the accounts
are made by `python -m fuzz`, which passes them in the environment (fuzz/__main__.py).
"""

from __future__ import annotations

import base64
import collections
import functools
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from tokenrota_server import totp

from tests.passkey_support import ORIGIN, SoftAuthenticator

# The scope the run's resource defines (`python -m fuzz`), and the one the case's clients get.
RESOURCE_SCOPE = "read"
CLIENT_SCOPE = "revocations:read"
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


def _login_body(case: Any) -> dict[str, Any] | None:
    body = case.body or {}
    resource = {"resource": _environment("FUZZ_RESOURCE")} if "resource" in body else {}
    email, password = _environment("FUZZ_LOGIN_EMAIL"), _environment("FUZZ_LOGIN_PASSWORD")
    return {**body, "email": email, "password": password, **resource}


def _refresh_body(case: Any) -> dict[str, Any] | None:
    answer = _login(_environment("FUZZ_LOGIN_EMAIL"), _environment("FUZZ_LOGIN_PASSWORD"))
    answer.raise_for_status()
    return {"refresh_token": answer.json()["refresh_token"]}


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {_environment('FUZZ_ADMIN_TOKEN')}"}


def _new_client() -> dict[str, Any]:
    made = _http().post(
        "/admin/clients",
        json={"name": "a fuzzed client", "scopes": [CLIENT_SCOPE]},
        headers=_admin(),
    )
    made.raise_for_status()
    return dict(made.json())


def _token_body(case: Any) -> dict[str, Any] | None:
    """client_credentials for a client made for this case: the fuzzer may have rotated or
    deleted any client it found listed, the run's own included."""
    client = _new_client()
    basic = httpx.BasicAuth(client["client_id"], client["client_secret"])
    case.headers = {**(case.headers or {}), **_basic_header(basic)}
    return {"grant_type": "client_credentials", "scope": CLIENT_SCOPE}


def _basic_header(auth: httpx.BasicAuth) -> dict[str, str]:
    request = next(auth.auth_flow(httpx.Request("POST", "http://fuzz")))
    return {"Authorization": request.headers["Authorization"]}


def _login_mfa_body(case: Any) -> dict[str, Any] | None:
    code = _totp_code("FUZZ_MFA_SECRET", "FUZZ_MFA_SPENT_STEP")
    if code is None:
        return None
    started = _login(_environment("FUZZ_MFA_EMAIL"), _environment("FUZZ_MFA_PASSWORD")).json()
    return {"mfa_token": started["mfa_token"], "code": code} if "mfa_token" in started else None


def _challenge_body(case: Any) -> dict[str, Any] | None:
    code = _totp_code("FUZZ_USER_TOTP_SECRET", "FUZZ_USER_SPENT_STEP")
    return None if code is None else {"code": code}


def _new_resource_body(case: Any) -> dict[str, Any] | None:
    uri = f"https://{uuid.uuid4().hex}.fuzz.example"
    return {"uri": uri, "name": "a fuzzed resource", "scopes": [RESOURCE_SCOPE]}


def _new_user_body(case: Any) -> dict[str, Any] | None:
    return {"email": f"fuzz-{uuid.uuid4().hex}@example.com"}


def _register_passkey_body(case: Any) -> dict[str, Any] | None:
    return {"credential": _new_passkey(SoftAuthenticator()), "name": "a fuzzed passkey"}


def _new_passkey(authenticator: SoftAuthenticator) -> dict[str, Any]:
    """A creation response for the fuzzer's user, over options the service just gave."""
    options = _http().post("/passkeys/register/options", headers=_bearer())
    options.raise_for_status()
    return authenticator.create(options.json(), origin=PASSKEY_ORIGIN)


def _signing_passkey() -> SoftAuthenticator:
    """A new passkey of the fuzzer's user, to sign in with (one made earlier may have been
    removed by a fuzzed DELETE /mfa/factors/{id})."""
    authenticator = SoftAuthenticator()
    credential = _new_passkey(authenticator)
    registered = _http().post(
        "/passkeys/register", json={"credential": credential}, headers=_bearer()
    )
    registered.raise_for_status()
    return authenticator


def _passkey_login_body(case: Any) -> dict[str, Any] | None:
    authenticator = _signing_passkey()
    options = _http().post("/passkeys/login/options")
    options.raise_for_status()
    return {"credential": authenticator.get(options.json(), origin=PASSKEY_ORIGIN)}


def _renamed_session(case: Any) -> dict[str, Any] | None:
    """A new session of the fuzzer's user (signed in with a new passkey) to rename: the one
    `python -m fuzz` made may have been ended by a fuzzed DELETE /sessions/{id}."""
    signed_in = _http().post("/passkeys/login", json=_passkey_login_body(case))
    signed_in.raise_for_status()
    token = signed_in.json()["access_token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    case.path_parameters = {**(case.path_parameters or {}), "session_id": claims["sid"]}
    return None


_GRANT_KINDS = ("token", "exchange", "serves")


def _grant_path(case: Any, *, granted: bool) -> None:
    """A new client and a new resource in the path (the drawn kind if it is one, else
    `token`); with `granted`, the grant is there to take back."""
    client = _new_client()
    resource = _http().post("/admin/resources", json=_new_resource_body(case), headers=_admin())
    resource.raise_for_status()
    parameters = case.path_parameters or {}
    kind = parameters.get("kind") if parameters.get("kind") in _GRANT_KINDS else "token"
    path = f"/admin/clients/{client['client_id']}/grants/{resource.json()['id']}/{kind}"
    if granted:
        _http().put(path, json={}, headers=_admin()).raise_for_status()
    case.path_parameters = {
        **parameters,
        "client_id": client["client_id"],
        "resource_id": resource.json()["id"],
        "kind": kind,
    }


def _console_asset(case: Any) -> None:
    case.path_parameters = {**(case.path_parameters or {}), "name": "app.js"}


# Operations without a body to make: only their path is made live.
LIVE_PATHS: dict[tuple[str, str], Callable[[Any], None]] = {
    ("PUT", "/admin/clients/{client_id}/grants/{resource_id}/{kind}"): functools.partial(
        _grant_path, granted=False
    ),
    ("DELETE", "/admin/clients/{client_id}/grants/{resource_id}/{kind}"): functools.partial(
        _grant_path, granted=True
    ),
    ("GET", "/console/{name}"): _console_asset,
}

# Each makes the case live: its new body (None: the body stays), and any header or path.
LIVE_CASES: dict[tuple[str, str], Callable[[Any], dict[str, Any] | None]] = {
    ("POST", "/login"): _login_body,
    ("POST", "/refresh"): _refresh_body,
    ("POST", "/oauth/token"): _token_body,
    ("POST", "/login/mfa"): _login_mfa_body,
    ("POST", "/mfa/challenge"): _challenge_body,
    ("POST", "/admin/resources"): _new_resource_body,
    ("POST", "/admin/users"): _new_user_body,
    ("POST", "/passkeys/register"): _register_passkey_body,
    ("POST", "/passkeys/login"): _passkey_login_body,
    ("PATCH", "/sessions/{session_id}"): _renamed_session,
}
_seen: collections.Counter[tuple[str, str, str]] = collections.Counter()


def make_live(operation: tuple[str, str], phase: str, case: Any) -> None:
    """Make every other positive case of `operation` in a `phase` live, its first included.
    Per phase, since schemathesis judges each phase's answers apart, and a phase may draw a
    single positive case."""
    make = LIVE_CASES.get(operation)
    make_path = LIVE_PATHS.get(operation)
    if make_path is None and (make is None or not isinstance(case.body, dict)):
        return
    _seen[(*operation, phase)] += 1
    if _seen[(*operation, phase)] % 2 == 0:
        return
    try:
        if make_path is not None:
            make_path(case)
            return
        assert make is not None
        body = make(case)
    except (httpx.HTTPError, KeyError, ValueError):
        # The instance would not give one (the bearer's session ended by a fuzzed logout,
        # say): the case goes as drawn rather than as an error of the run.
        return
    if body is not None:
        case.body = body
