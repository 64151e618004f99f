"""The bare prototype the service is measured against: what a first version would look like.

Starlette under uvicorn (uvloop, httptools, no access log), python-jose HS256, one asyncpg pool,
on the service's own tables and secrets, so that the service's /login makes its tokens. No
login, no reuse detection, no session or user checks on refresh, no middleware, no logging:

    POST /refresh  verify the JWT; UPDATE the token spent and INSERT its child, in a transaction
    GET /profile   verify the JWT; the same one-query session and user lookup as the service's

    DATABASE_URL=... ACCESS_TOKEN_SECRET=... REFRESH_TOKEN_SECRET=... TOKEN_ISSUER=... \
        uvicorn bench.prototype:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from jose import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ACCESS, REFRESH = os.environ["ACCESS_TOKEN_SECRET"], os.environ["REFRESH_TOKEN_SECRET"]
ISSUER, AUDIENCE = os.environ["TOKEN_ISSUER"], os.environ.get("TOKEN_AUDIENCE", "token-service")
pool: asyncpg.Pool


def decode(token: str, secret: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER
    )
    return claims


def mint(claims: dict[str, Any], secret: str, ttl: int) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl, **claims}
    return str(jwt.encode({**payload, "jti": secrets.token_urlsafe(16)}, secret, "HS256"))


async def refresh(request: Request) -> JSONResponse:
    token = (await request.json())["refresh_token"]
    claims = decode(token, REFRESH)
    child = mint({"sub": claims["sub"], "sid": claims["sid"], "typ": "refresh"}, REFRESH, 604800)
    now = datetime.now(UTC)
    async with pool.acquire() as connection, connection.transaction():
        parent = await connection.fetchval(
            "UPDATE refresh_tokens SET used_at = $2 WHERE token_digest = $1 AND used_at IS NULL"
            " RETURNING id",
            hashlib.sha256(token.encode()).digest(),
            now,
        )
        if parent is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        await connection.execute(
            "INSERT INTO refresh_tokens (session_id, parent_id, token_digest, issued_at,"
            " expires_at) VALUES ($1, $2, $3, $4, $4::timestamptz + interval '7 days')",
            claims["sid"],
            parent,
            hashlib.sha256(child.encode()).digest(),
            now,
        )
    access = mint({"sub": claims["sub"], "sid": claims["sid"], "scope": ""}, ACCESS, 900)
    return JSONResponse({"access_token": access, "refresh_token": child, "token_type": "Bearer"})


async def profile(request: Request) -> JSONResponse:
    claims = decode(request.headers["authorization"].removeprefix("Bearer "), ACCESS)
    row = await pool.fetchrow(
        "SELECT u.id, u.email, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3"
        " AND u.disabled_at IS NULL",
        claims["sid"],
        claims["sub"],
        datetime.now(UTC),
    )
    if row is None:
        return JSONResponse({"error": "invalid_token"}, status_code=401)
    user = {"id": str(row["id"]), "email": row["email"], "created_at": row["created_at"]}
    return JSONResponse({"user": {**user, "created_at": user["created_at"].isoformat()}})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=10)
    yield
    await pool.close()


app = Starlette(
    routes=[Route("/refresh", refresh, methods=["POST"]), Route("/profile", profile)],
    lifespan=lifespan,
)
