"""What a second-factor step costs, and whether its kinds of wrong can be told apart by time.

In-process: the median cost of one TOTP check (opening the sealed secret, then the three
candidate codes of the drift window computed and compared), and of one recovery code's digest.
Over HTTP against `tokenrota serve` (production settings) on a fresh database: one user with a
TOTP factor, one mfa_token (the throttles lifted), and `/login/mfa` answered with each kind of
wrong in turn (interleaved, so that every kind sees the same machine): a wrong code, a malformed
one, one two steps off, a replayed one, an unknown recovery code, a used one. Every kind should
take the same time: they run the same steps (docs/benchmarks.md, "Second factors"). Nothing
here asserts speed.

    .venv/bin/python -m bench.mfa [--rounds 300] [--checks 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.datastructures import Secret
from tokenrota_server import recovery_codes, totp
from tokenrota_server.config import Settings
from tokenrota_server.mfa_crypto import FactorKeys

from bench.__main__ import free_port, production_environment, serving, summary
from bench.databases import migrated_database

PASSWORD = "correct horse battery"
EMAIL = "mfa@example.com"


def in_process(checks: int) -> None:
    settings = Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        mfa_encryption_key=Secret(secrets.token_urlsafe(48)),
    )
    keys = FactorKeys(settings)
    factor_id = uuid.uuid4()
    sealed = keys.seal(factor_id, totp.new_secret())
    now = datetime.now(UTC)
    samples, digests = [], []
    for _ in range(checks):
        started = time.perf_counter()
        secret = keys.open(factor_id, sealed)
        assert secret is not None
        totp.matching_step(secret, "123456", now)
        samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        keys.code_digest(recovery_codes.normalize("7k3qd-m9x2p"))
        digests.append(time.perf_counter() - started)
    print(f"TOTP check (open + 3 codes): median {statistics.median(samples) * 1e6:.1f} µs")
    print(f"recovery code digest:        median {statistics.median(digests) * 1e6:.1f} µs")


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> Any:
    response = await client.post(path, json=body, **kw)
    return response


async def measure(base_url: str, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        assert (
            await post(client, "/register", {"email": EMAIL, "password": PASSWORD})
        ).status_code == 201
        pair = (await post(client, "/login", {"email": EMAIL, "password": PASSWORD})).json()
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        started = (await post(client, "/mfa/totp", {}, headers=headers)).json()
        secret = started["secret"]
        used_step = totp.step_of(datetime.now(UTC))
        verified = await post(
            client,
            f"/mfa/totp/{started['factor_id']}/verify",
            {"code": totp.code_at(secret, used_step)},
            headers=headers,
        )
        codes = verified.json()["recovery_codes"]
        login = {"email": EMAIL, "password": PASSWORD}
        spend = (await post(client, "/login", login)).json()["mfa_token"]
        assert (
            await post(client, "/login/mfa", {"mfa_token": spend, "recovery_code": codes[0]})
        ).status_code == 200
        mfa_token = (await post(client, "/login", login)).json()["mfa_token"]

        def kinds() -> dict[str, dict[str, str]]:
            step = totp.step_of(datetime.now(UTC))
            return {
                "wrong code": {"code": totp.code_at(secret, step + 7)},
                "malformed code": {"code": "12ab5"},
                "code two steps off": {"code": totp.code_at(secret, step - 2)},
                "replayed code": {"code": totp.code_at(secret, used_step)},
                "unknown recovery code": {"recovery_code": "00000-00000"},
                "used recovery code": {"recovery_code": codes[0]},
            }

        samples: dict[str, list[float]] = {kind: [] for kind in kinds()}
        for n in range(rounds + 20):
            for kind, answer in kinds().items():
                began = time.perf_counter()
                response = await post(client, "/login/mfa", {"mfa_token": mfa_token, **answer})
                elapsed = time.perf_counter() - began
                assert response.status_code == 401, response.text
                if n >= 20:  # the first rounds warm connections and code paths
                    samples[kind].append(elapsed)
        for kind, values in samples.items():
            print(summary(f"/login/mfa, {kind}", values))
        medians = [statistics.median(values) for values in samples.values()]
        print(f"slowest / fastest median: {max(medians) / min(medians):.3f}")


async def run(args: Any) -> None:
    in_process(args.checks)
    async with migrated_database() as database_url:
        environment = production_environment(
            "https://bench.tokenrota.invalid",
            DATABASE_URL=database_url,
            PORT=str(free_port()),
            MAIL_POLL_INTERVAL="0",
            # Thousands of wrong codes for one user and one token: the throttles lifted.
            MFA_USER_MAX_ATTEMPTS="1000000",
            MFA_TOKEN_MAX_ATTEMPTS="1000000",
        )
        async with serving(environment) as base_url:
            await measure(base_url, args.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="attempts per kind of wrong")
    parser.add_argument("--checks", type=int, default=5000, help="in-process TOTP checks")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
