"""A resource server built with the library, run as its own uvicorn process by the feed's tests
and by bench/revocation_latency.py:

    SERVICE_URL=http://127.0.0.1:8000 CLIENT_ID=... CLIENT_SECRET=... ACCESS_TOKEN_SECRET=... \\
    TOKEN_ISSUER=token-service TOKEN_AUDIENCE=https://api.tokenrota.test PORT=9000 \\
        python -m tests.resource_server

`GET /whoami` needs a valid, unrevoked token; `GET /follower` (public) tells how far the
follower is: `{"caught_up", "entries", "lag_seconds"}`. The follower starts and stops with the
app's lifespan.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.revocations import RevocationFollower
from tokenrota.verify import TokenVerifier, protect, token_claims


def build_app(environ: dict[str, str]) -> Starlette:
    """The resource server for the settings in `environ`."""
    http = httpx.AsyncClient()
    follower = RevocationFollower(
        f"{environ['SERVICE_URL']}/oauth/revocations",
        http,
        client_id=environ["CLIENT_ID"],
        client_secret=environ["CLIENT_SECRET"],
        wait=int(environ.get("FEED_WAIT", "20")),
    )
    verifier = TokenVerifier(
        issuer=environ.get("TOKEN_ISSUER", "token-service"),
        audience=environ.get("TOKEN_AUDIENCE", "https://api.tokenrota.test"),
        secret=environ["ACCESS_TOKEN_SECRET"],
        revocations=follower,
    )

    async def whoami(request: Request) -> Response:
        return JSONResponse({"sub": token_claims(request).subject})

    async def progress(request: Request) -> Response:
        return JSONResponse(
            {
                "caught_up": not follower.stale,
                "entries": follower.entries,
                "lag_seconds": follower.lag_seconds,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with follower:
            yield
        await http.aclose()

    return Starlette(
        routes=[Route("/whoami", whoami), Route("/follower", progress)],
        middleware=[protect(verifier, public=["/follower"])],
        lifespan=lifespan,
    )


if __name__ == "__main__":
    uvicorn.run(
        build_app(dict(os.environ)),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_level="warning",
    )
