"""What /password/forgot and /password/reset cost, over HTTP against a real server.

Starts `tokenrota serve` (production settings and argon2 parameters) on a fresh database, then:
  - `forgot` for an email with an account and for one without, interleaved (known, unknown,
    known, ...) so that both see the same machine: the two medians should match, since both do
    the same work (one throttle statement, one token-and-message statement, no argon2);
  - `reset`, each with a fresh token (asked for with `forgot`, read from the outbox and opened
    as the drainer would): the check, argon2 hashing the new password, and the commit that
    revokes every session.
The server's mail drainer is off (MAIL_POLL_INTERVAL=0): messages only queue up, so what is
measured is the request alone. Numbers go to docs/benchmarks.md; nothing here asserts speed.

    .venv/bin/python -m bench.recovery [--rounds 400] [--resets 40]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from typing import Any

import asyncpg
import httpx
from tokenrota_server.config import load_settings
from tokenrota_server.outbox import Sealer

from bench.__main__ import (
    free_port,
    production_environment,
    serving,
    summary,
)
from bench.databases import migrated_database

PASSWORD = "correct horse battery"
KNOWN = "known@example.com"
UNKNOWN = "unknown@example.com"


async def timed(client: httpx.AsyncClient, path: str, body: dict[str, str], status: int) -> float:
    started = time.perf_counter()
    response = await client.post(path, json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == status, response.text
    return elapsed


async def measure(base_url: str, database_url: str, sealer: Sealer, args: Any) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await timed(client, "/register", {"email": KNOWN, "password": PASSWORD}, 201)
        await client.post("/login", json={"email": KNOWN, "password": PASSWORD})
        for _ in range(20):  # warm up connections and code paths
            await timed(client, "/password/forgot", {"email": KNOWN}, 202)
            await timed(client, "/password/forgot", {"email": UNKNOWN}, 202)
        known, unknown = [], []
        for _ in range(args.rounds):
            known.append(await timed(client, "/password/forgot", {"email": KNOWN}, 202))
            unknown.append(await timed(client, "/password/forgot", {"email": UNKNOWN}, 202))
        print(summary("forgot, known email", known))
        print(summary("forgot, unknown email", unknown))
        ratio = statistics.median(known) / statistics.median(unknown)
        print(f"median known / unknown: {ratio:.3f}")

        connection = await asyncpg.connect(database_url)
        resets = []
        try:
            for n in range(args.resets):
                await timed(client, "/password/forgot", {"email": KNOWN}, 202)
                sealed = await connection.fetchval(
                    "SELECT text_body FROM mail_outbox ORDER BY id DESC LIMIT 1"
                )
                text = sealer.open(sealed) or ""
                token = re.search(r"token=([A-Za-z0-9_-]+)", text)
                assert token is not None
                body = {"token": token.group(1), "new_password": f"{PASSWORD} {n}"}
                resets.append(await timed(client, "/password/reset", body, 204))
        finally:
            await connection.close()
        print(summary("reset (argon2 + commit)", resets))


async def run(args: Any) -> None:
    async with migrated_database() as database_url:
        port = free_port()
        environment = production_environment(
            "https://bench.tokenrota.invalid",
            DATABASE_URL=database_url,
            PORT=str(port),
            MAIL_POLL_INTERVAL="0",
            # Hundreds of requests from one address and for one email: the throttles lifted.
            PASSWORD_FORGOT_EMAIL_MAX_ATTEMPTS="1000000",
            PASSWORD_FORGOT_IP_MAX_ATTEMPTS="1000000",
        )
        sealer = Sealer(load_settings(environment))
        async with serving(environment) as base_url:
            await measure(base_url, database_url, sealer, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400, help="forgot requests per email")
    parser.add_argument("--resets", type=int, default=40, help="resets measured")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
