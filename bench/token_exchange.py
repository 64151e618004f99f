"""What one token exchange (RFC 8693) costs, beside a client_credentials token and a refresh.

    .venv/bin/python -m bench.token_exchange [--requests 300]

The service under uvicorn in a subprocess (the embedded Postgres, a fresh database, argon2 at
the production defaults), one request at a time over HTTP: a resource server's client exchanges
a user's token for itself for one toward a downstream resource. The client's secret is checked
by argon2 once, then remembered for a minute (as for introspection), so the steady state is
what is measured; the first exchange's argon2 run is left out (a warm-up request).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys

import asyncpg
import httpx
from argon2 import PasswordHasher

from bench.databases import migrated_database
from bench.verify_vs_introspect import (
    PROFILES,
    ROOT,
    free_port,
    per_call,
    report,
    settings_for,
    wait_until_up,
)

UPSTREAM = "https://orders.example/"
DOWNSTREAM = "https://billing.example/"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
PASSWORD = "correct horse battery"


async def prepare(database_url: str, hasher: PasswordHasher) -> tuple[str, str]:
    """The two resources and the upstream API's client, granted to serve one and exchange
    toward the other; its id and secret."""
    client_id, secret = secrets.token_hex(16), secrets.token_urlsafe(32)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO resources (uri, name, scopes) VALUES"
            " ($1, 'orders', '{shared:read}'), ($2, 'billing', '{shared:read}')",
            UPSTREAM,
            DOWNSTREAM,
        )
        await connection.execute(
            "INSERT INTO clients (client_id, name, secret_hash) VALUES ($1, 'orders', $2)",
            client_id,
            hasher.hash(secret),
        )
        await connection.execute(
            "INSERT INTO client_resources (client_id, resource_id, kind, scopes)"
            " SELECT $1, id, CASE WHEN uri = $2 THEN 'serves' ELSE 'exchange' END,"
            " CASE WHEN uri = $2 THEN '{}'::text[] ELSE '{shared:read}'::text[] END"
            " FROM resources",
            client_id,
            UPSTREAM,
        )
        await connection.execute(
            "INSERT INTO clients (client_id, name, secret_hash, scopes)"
            " VALUES ($1 || 'cc', 'plain', $2, '{read}')",
            client_id,
            hasher.hash(secret),
        )
    finally:
        await connection.close()
    return client_id, secret


async def run(arguments: argparse.Namespace) -> None:
    time_cost, memory_cost, parallelism = PROFILES["argon2 production (t=3, m=64 MiB, p=4)"]
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    async with migrated_database() as database_url:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
        client_id, secret = await prepare(database_url, hasher)
        settings = settings_for(database_url)
        port = free_port()
        environment = {
            **os.environ,
            "ENV": "test",
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "ACCESS_TOKEN_SECRET": str(settings.access_token_secret),
            "REFRESH_TOKEN_SECRET": str(settings.refresh_token_secret),
            "ARGON2_TIME_COST": str(time_cost),
            "ARGON2_MEMORY_COST": str(memory_cost),
            "ARGON2_PARALLELISM": str(parallelism),
        }
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tokenrota_server",
            "serve",
            cwd=ROOT,
            env=environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            try:
                await wait_until_up(http)
                await measure(http, client_id, secret, arguments.requests)
            finally:
                server.terminate()
                await server.wait()


async def measure(http: httpx.AsyncClient, client_id: str, secret: str, count: int) -> None:
    email = f"bench-{secrets.token_hex(4)}@example.com"
    await http.post("/register", json={"email": email, "password": PASSWORD})
    pair = (
        await http.post("/login", json={"email": email, "password": PASSWORD, "resource": UPSTREAM})
    ).json()
    subject = pair["access_token"]
    form = {
        "grant_type": EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": DOWNSTREAM,
    }

    async def exchange() -> None:
        answer = await http.post("/oauth/token", data=form, auth=(client_id, secret))
        assert answer.status_code == 200, answer.text

    async def client_credentials() -> None:
        answer = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id + "cc", secret),
        )
        assert answer.status_code == 200, answer.text

    refresh_token = pair["refresh_token"]

    async def refresh() -> None:
        nonlocal refresh_token
        answer = await http.post(
            "/refresh", json={"refresh_token": refresh_token, "resource": DOWNSTREAM}
        )
        assert answer.status_code == 200, answer.text
        refresh_token = answer.json()["refresh_token"]

    await exchange()  # the client's one argon2 check, then remembered
    await client_credentials()
    print(f"one request at a time over HTTP ({count} each):")
    report("token exchange", await per_call(exchange, count))
    report("client_credentials (for comparison)", await per_call(client_credentials, count))
    report("/refresh with resource (for comparison)", await per_call(refresh, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
