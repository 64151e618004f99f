"""Property-based run of /openapi.json (schemathesis) against a real local instance.

Starts an instance as the pytest plugin does (a fresh database on the embedded Postgres, or on
TEST_DATABASE_URL), gives the fuzzer a credential for every security scheme (a user's bearer,
an admin client's token, a client's Basic; fuzz/schemathesis.toml) so that every operation is
reached past its authentication, and runs the schemathesis CLI over every documented operation
with valid and invalid inputs; fuzz/hooks.py generates the cursors' grammars, and fuzz/live.py
sends every other positive case of the operations that need a live value with one (the accounts,
the resource and the factors made here). It fails on any 5xx and on any answer that the document
does not allow (status, content type, headers, body).
Extra arguments go to schemathesis (`make fuzz FUZZ_ARGS="--max-examples 500"`).

    .venv/bin/python -m fuzz
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from tokenrota.testing import TokenService, TotpAccount, instance_settings, run_token_service
from tokenrota_server.db import schema
from tokenrota_server.db.pool import start_embedded

from fuzz.live import CLIENT_SCOPE, PASSKEY_ORIGIN, RESOURCE_SCOPE

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)

SESSION_ENDING = "/logout/all"
# Development only, and it may wait up to 10 s for a message that a fuzzed email never gets.
DEV_MAILBOX = "/dev/mailbox/latest"
LAST_ALONE = (
    ("--exclude-path", SESSION_ENDING, "--exclude-path", DEV_MAILBOX),
    ("--include-path", SESSION_ENDING),
)


HERE = Path(__file__).parent
# The revocation feed's scope: the feed client holds it once reading the feed needs it.
FEED_SCOPE = CLIENT_SCOPE
# The run's registered resource, named in some logins (fuzz/live.py).
RESOURCE_URI = "https://api.fuzz.example"


async def admin_token(service: TokenService) -> str:
    """A client-credentials token with the admin scope, of a client made for the run."""
    client = await service.create_client(scopes=("admin",))
    async with httpx.AsyncClient(base_url=service.base_url) as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "admin"},
            auth=(client.client_id, client.client_secret),
        )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


# Live tokens of each kind: the fuzzer spends them, one per phase at most.
LIVE_TOKENS = 4


async def live_tokens(service: TokenService) -> dict[str, str]:
    """Live reset and verification tokens, of users made for them, space-separated: the fuzzer
    spends them (fuzz/hooks.py), so those operations answer more than 400."""
    resetting = [await service.create_user() for _ in range(LIVE_TOKENS)]
    verifying = [await service.create_user() for _ in range(LIVE_TOKENS)]
    async with httpx.AsyncClient(base_url=service.base_url) as http:
        for user in resetting:
            response = await http.post("/password/forgot", json={"email": user.email})
            response.raise_for_status()
        for user in verifying:
            pair = await service.login(user.email, user.password)
            response = await http.post(
                "/email/verification", headers={"Authorization": f"Bearer {pair.access_token}"}
            )
            response.raise_for_status()
    reset = [(await service.wait_for_mail(user.email)).token for user in resetting]
    verification = [(await service.wait_for_mail(user.email)).token for user in verifying]
    return {
        "FUZZ_RESET_TOKENS": " ".join(token for token in reset if token),
        "FUZZ_VERIFICATION_TOKENS": " ".join(token for token in verification if token),
    }


async def registered_resource(service: TokenService, admin: str) -> str:
    """The run's resource, registered through the admin API."""
    async with httpx.AsyncClient(base_url=service.base_url) as http:
        response = await http.post(
            "/admin/resources",
            json={"uri": RESOURCE_URI, "name": "the fuzz run's API", "scopes": [RESOURCE_SCOPE]},
            headers={"Authorization": f"Bearer {admin}"},
        )
    response.raise_for_status()
    return RESOURCE_URI


async def live_accounts(service: TokenService) -> dict[str, str]:
    """A user to log in and refresh as, and one with a TOTP factor to finish logins with."""
    plain = await service.create_user()
    second_factor = await service.create_totp_user()
    return {
        "FUZZ_LOGIN_EMAIL": plain.email,
        "FUZZ_LOGIN_PASSWORD": plain.password,
        "FUZZ_MFA_EMAIL": second_factor.email,
        "FUZZ_MFA_PASSWORD": second_factor.password,
        "FUZZ_MFA_SECRET": second_factor.secret,
        "FUZZ_MFA_SPENT_STEP": str(second_factor.last_step),
    }


async def recovery_login(service: TokenService, account: TotpAccount) -> str:
    """Another session of `account`, finished with a recovery code: its access token."""
    async with httpx.AsyncClient(base_url=service.base_url) as http:
        body = {"email": account.email, "password": account.password}
        started = await http.post("/login", json=body)
        finished = await http.post(
            "/login/mfa",
            json={
                "mfa_token": started.json()["mfa_token"],
                "recovery_code": account.recovery_codes[0],
            },
        )
    finished.raise_for_status()
    token: str = finished.json()["access_token"]
    return token


def session_id_of(access_token: str) -> str:
    """The `sid` claim of one of our access tokens (read, not verified: we just minted it)."""
    payload = access_token.split(".")[1]
    sid: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
    return sid


async def fuzz(arguments: list[str]) -> int:
    server = os.environ.get("TEST_DATABASE_URL") or start_embedded(Path(".data") / "test")
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
        await asyncio.to_thread(schema.upgrade, url)
        # Every fuzzed request comes from 127.0.0.1: the address's throttles would soon answer
        # all logins and registrations with 429, the second run's own login included, and the
        # fuzzer would reach nothing past them. The per-email limit stays.
        settings = instance_settings(
            url,
            docs_enabled=True,
            login_ip_max_attempts=1_000_000,
            register_ip_max_attempts=1_000_000,
            passkey_options_ip_max_attempts=1_000_000,
            # Likewise the second-factor throttles (every wrong code counts against the user),
            # and the bearer's login stays recent enough to manage its factors for the run.
            mfa_user_max_attempts=1_000_000,
            mfa_token_max_attempts=1_000_000,
            mfa_manage_max_age=24 * 3600,
            # The software authenticator's page (fuzz/live.py signs passkeys for it).
            webauthn_origins=(PASSKEY_ORIGIN,),
        )
        async with run_token_service(settings) as service:
            client = await service.create_client(scopes=(FEED_SCOPE,))
            admin_bearer = await admin_token(service)
            credentials = {
                "FUZZ_ADMIN_TOKEN": admin_bearer,
                "FUZZ_CLIENT_ID": client.client_id,
                "FUZZ_CLIENT_SECRET": client.client_secret,
                "FUZZ_RESOURCE": await registered_resource(service, admin_bearer),
                "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"),
                # fuzz/live.py and the helpers it shares with the tests, for the hooks' process.
                "PYTHONPATH": str(HERE.parent),
                # The URL the instance publishes, which DPoP proofs name (fuzz/hooks.py).
                "FUZZ_BASE_URL": service.settings.public_base_url,
                # Where fuzz/live.py asks the instance for live values.
                "FUZZ_SERVICE_URL": service.base_url,
                **await live_tokens(service),
                **await live_accounts(service),
            }
            executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
            assert executable is not None, "schemathesis is a dev dependency: make install"
            # POST /logout/all ends the session of the bearer token: fuzzed along with the
            # rest, it left /profile and /sessions only 403s to answer. It runs last, alone,
            # and each run has a user of its own: the first may change its user's password
            # (the fuzzer is given it, fuzz/hooks.py).
            for selection in LAST_ALONE:
                # A live TOTP factor and an aal2 login, so the factor routes (/mfa/challenge,
                # /mfa/recovery-codes, passkeys) have something to act on (fuzz/live.py).
                user = await service.create_totp_user()
                pair = await service.login_with_totp(user)
                # Another session of the same user to rename: the bearer's own stays alive even
                # if a fuzzed DELETE /sessions/{id} is handed the renamed one's id.
                renamed = await recovery_login(service, user)
                account = {
                    "FUZZ_USER_TOKEN": pair.access_token,
                    "FUZZ_USER_PASSWORD": user.password,
                    "FUZZ_USER_TOTP_SECRET": user.secret,
                    "FUZZ_USER_SPENT_STEP": str(user.last_step),
                    "FUZZ_SESSION_ID": session_id_of(renamed),
                }
                process = await asyncio.create_subprocess_exec(
                    executable,
                    "--config-file",
                    str(HERE / "schemathesis.toml"),
                    "run",
                    f"{service.base_url}/openapi.json",
                    "--checks",
                    CHECKS,
                    # One worker: with two, Hypothesis describing lambdas in both threads at once
                    # crashed CPython 3.11's parser now and then, failing a case.
                    "--workers",
                    "1",
                    "--seed",
                    "1",
                    *selection,
                    *arguments,
                    env={**os.environ, **credentials, **account},
                )
                if code := await process.wait():
                    return code
            return 0
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(fuzz(sys.argv[1:])))
