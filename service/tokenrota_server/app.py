"""The application factory: `create_app(settings)` wires routes, errors and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from tokenrota.clock import Clock, utc_now
from tokenrota.dpop import Nonces

from tokenrota_server import session_policy
from tokenrota_server.accounts import Accounts
from tokenrota_server.auth import Authenticator
from tokenrota_server.config import Settings
from tokenrota_server.db import purge
from tokenrota_server.db.pool import CONNECTION_ERRORS, PoolKeeper, forget_server, open_pool
from tokenrota_server.dpop import ProofChecker
from tokenrota_server.errors import ServiceError, Unavailable
from tokenrota_server.http import (
    accounts,
    admin,
    admin_accounts,
    auth,
    browser,
    console,
    metadata,
    metrics,
    mfa,
    oauth,
    oauth_clients,
    openapi,
    passkeys,
    recovery,
    revocations,
)
from tokenrota_server.http.dpop_nonces import SuccessNonces
from tokenrota_server.http.middleware import RequestObservability
from tokenrota_server.http.web import error_response
from tokenrota_server.mailer import MailboxBell
from tokenrota_server.mfa import SecondFactors
from tokenrota_server.mfa_crypto import FactorKeys
from tokenrota_server.oauth import AuthorizationServer
from tokenrota_server.outbox import Outbox
from tokenrota_server.passkeys import Passkeys
from tokenrota_server.passwords import Passwords
from tokenrota_server.recovery import Recovery
from tokenrota_server.revocations import FeedSignal
from tokenrota_server.state import AppState
from tokenrota_server.tokens import TokenCodec

logger = logging.getLogger("tokenrota")

_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(
    settings: Settings, *, clock: Clock = utc_now, pools: PoolKeeper | None = None
) -> Starlette:
    """Build the service for `settings`, whose `database_url` must be set; `pools`, if given,
    may lend its pool and keep it after (test suites)."""
    if settings.database_url is None:
        raise ValueError("settings.database_url must be set before create_app")
    database_url = settings.database_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        codec = TokenCodec(settings)
        passwords = Passwords(settings)
        options = (
            settings.db_pool_min_size,
            settings.db_pool_max_size,
            settings.database_pooler,
            settings.database_connect_timeout,
        )
        pool = await pools.take_pool(database_url, options) if pools is not None else None
        if pool is None:
            # A database down at startup is not fatal: requests get 503 until it returns.
            pool = await open_pool(
                database_url,
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                pooler=settings.database_pooler,
                connect_timeout=settings.database_connect_timeout,
            )
        purging = (
            asyncio.create_task(purge.purge_periodically(pool, settings, clock))
            if settings.purge_interval > 0
            else None
        )
        auth = Authenticator(settings, codec, passwords)
        passkey_checks = Passkeys(settings, auth)
        mailbox = MailboxBell()
        outbox = Outbox(settings, clock, mailbox)
        # With MAIL_POLL_INTERVAL=0 another instance sends; this one only writes the outbox.
        mailing = asyncio.create_task(outbox.run(pool)) if settings.mail_poll_interval > 0 else None
        # LISTEN needs a server session of its own: Postgres itself (DATABASE_DIRECT_URL) behind
        # a transaction pooler, whose server connections change hands; without one, polling.
        listens = settings.revocation_listen and (
            settings.database_pooler != "transaction" or settings.database_direct_url is not None
        )
        stopping = asyncio.Event()
        feed = FeedSignal(
            settings.session_database_url or database_url,
            listen=listens,
            stopping=stopping,
            connect_timeout=settings.database_connect_timeout,
        )
        feed.start()
        sweeping = (
            asyncio.create_task(session_policy.sweep_idle_periodically(pool, settings, clock))
            if settings.session_idle_timeout > 0
            else None
        )
        try:
            yield AppState(
                settings=settings,
                pool=pool,
                auth=auth,
                codec=codec,
                clock=clock,
                oauth=AuthorizationServer(settings, codec, passwords),
                proofs=_proof_checker(settings),
                accounts=Accounts(settings, passwords),
                recovery=Recovery(settings, passwords, outbox),
                mfa=SecondFactors(settings, auth, codec, FactorKeys(settings), passkey_checks),
                passkeys=passkey_checks,
                passwords=passwords,
                feed=feed,
                mailbox=mailbox,
                stopping=stopping,
            )
        finally:
            # Reached on SIGTERM too, after uvicorn has let the requests in flight finish.
            for task in (purging, mailing, sweeping):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await feed.close()
            kept = pools is not None and await pools.give_back_pool(database_url, options, pool)
            if not kept:
                await pool.close()
            passwords.close()
            metrics.forget_this_process()
            logger.info("database pool %s", "given back" if kept else "closed")

    return Starlette(
        routes=[
            *auth.routes,
            *mfa.routes,
            *accounts.routes,
            *recovery.routes,
            *passkeys.routes,
            *browser.routes,
            *console.routes,
            *oauth.routes,
            *admin.routes,
            *oauth_clients.routes,
            *admin_accounts.routes,
            *metadata.routes,
            *revocations.routes,
            *metrics.routes,
            *openapi.routes(with_docs=settings.serves_docs),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(RequestObservability),
            *_cors(settings),
            *([Middleware(SuccessNonces)] if settings.dpop_nonce else []),
        ],
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            **{kind: _database_unavailable for kind in CONNECTION_ERRORS},
            Exception: _unexpected_error,
        },
    )


def _proof_checker(settings: Settings) -> ProofChecker:
    nonces = None
    if settings.dpop_nonce:
        nonces = Nonces(str(settings.access_token_secret).encode("utf-8"))
    return ProofChecker(settings.public_base_url, nonces)


def _cors(settings: Settings) -> list[Middleware]:
    """CORS with credentials, for the allowed origins only (none: no CORS headers at all)."""
    if not settings.allowed_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "DPoP", "X-Requested-With"],
            expose_headers=["DPoP-Nonce", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
    ]


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "invalid_request")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return JSONResponse(
        {"error": code, "error_description": str(exc.detail)},
        status_code=exc.status_code,
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    # Starlette's 405 names the methods of the first route whose path matches; a path served by
    # several routes (GET and POST /admin/users) must name them all (RFC 9110 §15.5.6).
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("database unavailable: %s", type(exc).__name__)
    await forget_server(request.state["pool"], exc)
    return error_response(Unavailable())


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (uvicorn prints it); the caller learns nothing of it.
    return JSONResponse(
        {"error": "server_error", "error_description": "An unexpected error occurred."},
        status_code=500,
    )
