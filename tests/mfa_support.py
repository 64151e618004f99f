"""Helpers for second-factor tests: a user with a live TOTP factor, and codes for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from tokenrota_server import totp

from tests.support import PASSWORD, FakeClock, login, register


@dataclass
class TotpUser:
    """A user with a live TOTP factor, the secret it was enrolled with and its recovery codes."""

    user: dict[str, Any]
    email: str
    secret: str
    factor_id: str
    recovery_codes: list[str]

    def code(self, clock: FakeClock, steps: int = 0) -> str:
        """The code of the clock's time step, `steps` steps off."""
        return totp.code_at(self.secret, totp.step_of(clock.now) + steps)


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def enrol_totp(
    client: httpx.AsyncClient, clock: FakeClock, pair: dict[str, Any], name: str | None = None
) -> tuple[str, str, list[str] | None]:
    """Enrol and verify a TOTP factor with `pair`'s (recent) token: factor id, secret, codes.
    Moves the clock one step on, so the verifying code is not the next one asked for."""
    body = {} if name is None else {"name": name}
    started = await client.post("/mfa/totp", json=body, headers=bearer(pair))
    assert started.status_code == 201, started.text
    factor_id, secret = started.json()["factor_id"], started.json()["secret"]
    code = totp.code_at(secret, totp.step_of(clock.now))
    verified = await client.post(
        f"/mfa/totp/{factor_id}/verify", json={"code": code}, headers=bearer(pair)
    )
    assert verified.status_code == 200, verified.text
    clock.advance(totp.STEP_SECONDS)
    return factor_id, secret, verified.json().get("recovery_codes")


async def totp_user(client: httpx.AsyncClient, clock: FakeClock) -> TotpUser:
    """A new user with one live TOTP factor (and recovery codes)."""
    user = await register(client)
    pair = await login(client, user["email"])
    factor_id, secret, codes = await enrol_totp(client, clock, pair)
    assert codes is not None
    return TotpUser(user, user["email"], secret, factor_id, codes)


async def start_login(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    """/login for a user with a factor: the 403 mfa_required body."""
    response = await client.post("/login", json={"email": email, "password": password, **extra})
    assert response.status_code == 403, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "mfa_required"
    return body


async def mfa_login(
    client: httpx.AsyncClient, clock: FakeClock, who: TotpUser, resource: str | None = None
) -> dict[str, Any]:
    """A complete login with the password and the current code: the token pair (its access
    token for `resource` when given)."""
    started = await start_login(client, who.email)
    target = {} if resource is None else {"resource": resource}
    response = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "code": who.code(clock), **target}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair
