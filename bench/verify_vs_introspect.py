"""What it costs a resource server to check a token: locally, or by introspection, per request.

    .venv/bin/python -m bench.verify_vs_introspect [--requests 50] [--local 5000]

Local: `tokenrota.verify.TokenVerifier.verify` on one core, for HS256 (shared secret) and for
RS256/ES256 (keys from a JWKS, fetched once). Introspection: POST /oauth/introspect to the real
service (uvicorn in a subprocess, the embedded Postgres, a fresh database), one request at a
time and 8 in flight, with argon2 at the production defaults and at the cheap test profile:
introspection authenticates the calling client, so each call pays one argon2 verification.
Also: an introspection answer served from `tokenrota.verify.Introspection`'s cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.datastructures import Secret
from tokenrota.verify import Introspection, JwksKeys, TokenVerifier
from tokenrota_server.config import Settings
from tokenrota_server.tokens import TokenCodec

from bench.databases import migrated_database

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {
    "argon2 production (t=3, m=64 MiB, p=4)": (3, 65536, 4),
    "argon2 cheap (t=1, m=1 MiB, p=1)": (1, 1024, 1),
}


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def settings_for(database_url: str, **changes: object) -> Settings:
    return Settings(
        token_audience="https://api.bench.test",  # a resource server's audience is a URI
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        database_url=database_url,
        **changes,  # type: ignore[arg-type]
    )


async def per_call(function: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Seconds per call, one call at a time."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await function()
        times.append(time.perf_counter() - start)
    return times


def report(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(
        f"  {name:<46} mean {statistics.mean(times) * 1e6:10.1f} µs"
        f"   p50 {statistics.median(times) * 1e6:10.1f} µs   p95 {p95 * 1e6:10.1f} µs"
    )


async def local_verification(database_url: str, count: int) -> None:
    print(f"local verification ({count} tokens each, in this process):")
    await measure_local("HS256, shared secret", database_url, None, count)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await measure_local("RS256 (2048), JWKS", database_url, rsa_key, count)
    await measure_local(
        "ES256 (P-256), JWKS", database_url, ec.generate_private_key(ec.SECP256R1()), count
    )


async def measure_local(
    name: str,
    database_url: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None,
    count: int,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    settings = settings_for(
        database_url, access_token_signing_key=Secret(pem(key)) if key else None
    )
    codec = TokenCodec(settings)
    token, _ = codec.mint_access(subject="svc", client_id="svc", scope="read", now=now)
    if key is None:
        verifier = TokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            secret=str(settings.access_token_secret),
        )
    else:
        key_set = codec.jwks()
        http = httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(200, json=key_set))
        )
        verifier = TokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            jwks=JwksKeys("http://keys/jwks.json", http),
        )
    await verifier.verify(token)  # warm: the JWKS fetch happens once, not per request
    report(name, await per_call(lambda: verifier.verify(token), count))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def introspection(database_url: str, count: int) -> None:
    for profile, parameters in PROFILES.items():
        await measure_introspection(profile, parameters, database_url, count)


async def measure_introspection(
    profile: str, parameters: tuple[int, int, int], database_url: str, count: int
) -> None:
    time_cost, memory_cost, parallelism = parameters
    settings = settings_for(database_url)
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    client_id, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    connection = await asyncpg.connect(database_url)
    await connection.execute(
        "INSERT INTO clients (client_id, name, secret_hash, scopes) VALUES ($1, 'bench', $2, $3)",
        client_id,
        hasher.hash(secret),
        ["read"],
    )
    await connection.close()
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
    base = f"http://127.0.0.1:{port}"
    # argon2 at 64 MiB, 8 at a time on 2 cores, queues for seconds: no 5 s default timeout.
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        try:
            await wait_until_up(http)
            answer = await http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
            token = answer.json()["access_token"]
            inspector = Introspection(
                f"{base}/oauth/introspect",
                http,
                client_id=client_id,
                client_secret=secret,
                cache_ttl=0,
            )
            print(f"introspection over HTTP, {profile} ({count} requests):")
            await inspector.is_active(token)
            report("one at a time", await per_call(lambda: inspector.is_active(token), count))
            gate = asyncio.Semaphore(8)

            async def limited() -> None:
                async with gate:
                    await inspector.is_active(token)

            start = time.perf_counter()
            await asyncio.gather(*(limited() for _ in range(count)))
            elapsed = time.perf_counter() - start
            print(f"  {'8 in flight, throughput':<46} {count / elapsed:10.1f} requests/s")
            cached = Introspection(
                f"{base}/oauth/introspect",
                http,
                client_id=client_id,
                client_secret=secret,
                cache_ttl=60,
            )
            await cached.is_active(token)
            report(
                "cache hit (tokenrota.verify.Introspection)",
                await per_call(lambda: cached.is_active(token), count * 20),
            )
        finally:
            server.terminate()
            await server.wait()


async def wait_until_up(http: httpx.AsyncClient) -> None:
    for _ in range(400):
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the service did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="introspection requests")
    parser.add_argument("--local", type=int, default=5000, help="local verifications")
    arguments = parser.parse_args()
    asyncio.run(run(arguments))


async def run(arguments: argparse.Namespace) -> None:
    async with migrated_database() as database_url:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
        await local_verification(database_url, arguments.local)
        print()
        await introspection(database_url, arguments.requests)


if __name__ == "__main__":
    main()
