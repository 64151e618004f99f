"""A resource server built with the library, run as its own uvicorn process by the feed's tests
and by bench/revocation_latency.py:

    SERVICE_URL=http://127.0.0.1:8000 CLIENT_ID=... CLIENT_SECRET=... ACCESS_TOKEN_SECRET=... \\
    TOKEN_ISSUER=token-service TOKEN_AUDIENCE=https://api.tokenrota.test PORT=9000 \\
        python -m tests.resource_server

`GET /whoami` needs a valid, unrevoked token for TOKEN_AUDIENCE (this server's resource URI)
and answers `{"sub", "aud", "act"}`; `GET /follower` (public) tells how far the follower is:
`{"caught_up", "entries", "lag_seconds"}`. The follower starts and stops with the app's lifespan.
With NEXT_URL and NEXT_RESOURCE, `GET /next` calls `NEXT_URL/whoami` on its caller's behalf with
a token exchanged for NEXT_RESOURCE (its client's credentials), and answers what that said; a
refused exchange is 502 `{"exchange": status, "error": code}`.
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
from tokenrota.httpx_auth import TokenExchange
from tokenrota.revocations import RevocationFollower
from tokenrota.verify import TokenVerifier, presented_token, protect, token_claims


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
        claims = token_claims(request)
        return JSONResponse({"sub": claims.subject, "aud": claims.audience, "act": claims.actor})

    exchange = None
    if environ.get("NEXT_RESOURCE"):
        exchange = TokenExchange(
            f"{environ['SERVICE_URL']}/oauth/token",
            environ["CLIENT_ID"],
            environ["CLIENT_SECRET"],
            resource=environ["NEXT_RESOURCE"],
        )

    async def onward(request: Request) -> Response:
        if exchange is None:
            return JSONResponse({"error": "no next service"}, status_code=404)
        auth = exchange.on_behalf_of(presented_token(request))
        try:
            answer = await http.get(f"{environ['NEXT_URL']}/whoami", auth=auth)
        except httpx.HTTPStatusError as refused:
            error = refused.response.json().get("error")
            body = {"exchange": refused.response.status_code, "error": error}
            return JSONResponse(body, status_code=502)
        return JSONResponse(answer.json(), status_code=answer.status_code)

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
        routes=[Route("/whoami", whoami), Route("/next", onward), Route("/follower", progress)],
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
