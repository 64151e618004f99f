"""What checking a passkey assertion costs: the signature check alone, and the whole use case.

On a fresh database of the embedded Postgres (or BENCH_DATABASE_URL's server), no HTTP: one
user with one passkey of the tests' software authenticator (EC P-256, ES256), then

- py_webauthn's `verify_authentication_response` alone (parsing, client data, RP id hash, flags,
  the ECDSA signature), on one assertion again and again: the median;
- `Passkeys.check_assertion` for a fresh challenge and assertion each time (find the credential,
  spend the challenge, the checks above, move the counter): the median, one after another.

    .venv/bin/python -m bench.passkey_assertion [--rounds 3] [--checks 300]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from datetime import UTC, datetime

import asyncpg
import webauthn
from starlette.datastructures import Secret
from tokenrota_server.auth import Authenticator
from tokenrota_server.config import Settings
from tokenrota_server.db import users
from tokenrota_server.passkeys import Passkeys
from tokenrota_server.passwords import Passwords
from tokenrota_server.tokens import TokenCodec

from bench.databases import migrated_database
from tests.passkey_support import ORIGIN, SoftAuthenticator, unb64url


def signature_check(
    settings: Settings, authenticator: SoftAuthenticator, key: bytes, checks: int
) -> float:
    """The median seconds of py_webauthn's check of one assertion."""
    options = {"challenge": "AAAAAAAAAAAAAAAAAAAAAA", "rpId": settings.webauthn_rp_id}
    credential = authenticator.get(options)
    samples = []
    for _ in range(checks):
        started = time.perf_counter()
        webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=unb64url(options["challenge"]),
            expected_rp_id=settings.webauthn_rp_id,
            expected_origin=ORIGIN,
            credential_public_key=key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def use_case(
    pool: asyncpg.Pool, passkeys: Passkeys, authenticator: SoftAuthenticator, checks: int
) -> float:
    """The median seconds of a whole assertion check, each with its own challenge."""
    samples = []
    for _ in range(checks):
        now = datetime.now(UTC)
        options = await passkeys.authentication_options(pool, email=None, ip=None, now=now)
        credential = authenticator.get(options)
        started = time.perf_counter()
        await passkeys.check_assertion(pool, credential=credential, now=now, ip=None, for_user=None)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def run(arguments: argparse.Namespace) -> None:
    settings = Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        webauthn_origins=(ORIGIN,),
        # Every round asks for options from one (absent) address; the throttle is not measured.
        passkey_options_ip_max_attempts=1_000_000,
    )
    # Checking assertions never signs in: the Authenticator hashes nothing here.
    passkeys = Passkeys(
        settings, Authenticator(settings, TokenCodec(settings), Passwords(settings))
    )
    async with migrated_database() as database_url:
        pool = await asyncpg.create_pool(database_url, min_size=2, max_size=2)
        try:
            now = datetime.now(UTC)
            async with pool.acquire() as connection:
                user = await users.insert_user(
                    connection, email="bench@example.com", password_hash="unused", now=now
                )
            authenticator = SoftAuthenticator()
            options = await passkeys.registration_options(pool, user=user, now=now)
            checked = await passkeys.check_registration(
                pool, user_id=user.id, credential=authenticator.create(options), now=now
            )
            async with pool.acquire() as connection, connection.transaction():
                await passkeys.store(
                    connection, user_id=user.id, checked=checked, name="bench", now=now
                )
            key = await pool.fetchval("SELECT public_key FROM passkey_credentials")
            # Warm, not reported: statements prepared, code paths imported.
            signature_check(settings, authenticator, key, 20)
            await use_case(pool, passkeys, authenticator, 20)
            for round_number in range(1, arguments.rounds + 1):
                alone = signature_check(settings, authenticator, key, arguments.checks)
                whole = await use_case(pool, passkeys, authenticator, arguments.checks)
                print(
                    f"round {round_number}: py_webauthn's check {alone * 1000:.3f} ms, the use"
                    f" case {whole * 1000:.3f} ms (medians of {arguments.checks})"
                )
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.passkey_assertion", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checks", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
