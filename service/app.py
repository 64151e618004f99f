"""The application factory: `create_app(settings)` wires routes, errors and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import endpoints, metrics, openapi
from service.auth import Authenticator
from service.clock import Clock, utc_now
from service.config import Settings
from service.database import CONNECTION_ERRORS, open_pool
from service.errors import ServiceError, Unavailable
from service.middleware import RequestObservability
from service.passwords import Passwords
from service.state import AppState
from service.tokens import TokenCodec
from service.web import error_response

logger = logging.getLogger("service")

_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings, *, clock: Clock = utc_now) -> Starlette:
    """Build the service for `settings`, whose `database_url` must be set."""
    if settings.database_url is None:
        raise ValueError("settings.database_url must be set before create_app")
    database_url = settings.database_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        codec = TokenCodec(settings)
        passwords = Passwords(settings)
        # A database that is down at startup is not fatal: requests get 503 until it returns.
        pool = await open_pool(
            database_url, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size
        )
        try:
            yield AppState(
                settings=settings,
                pool=pool,
                auth=Authenticator(settings, codec, passwords),
                codec=codec,
                clock=clock,
            )
        finally:
            # Reached on SIGTERM too, after uvicorn has let the requests in flight finish.
            await pool.close()
            passwords.close()
            metrics.forget_this_process()
            logger.info("database pool closed")

    return Starlette(
        routes=[
            *endpoints.routes,
            *metrics.routes,
            *openapi.routes(with_docs=settings.serves_docs),
        ],
        middleware=[Middleware(RequestObservability)],
        lifespan=lifespan,
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            **{kind: _database_unavailable for kind in CONNECTION_ERRORS},
            Exception: _unexpected_error,
        },
    )


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERROR_CODES.get(exc.status_code, "invalid_request")
    return JSONResponse(
        {"error": code, "error_description": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("database unavailable: %s", type(exc).__name__)
    return error_response(Unavailable())


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (uvicorn prints it); the client learns nothing of it.
    return JSONResponse(
        {"error": "server_error", "error_description": "An unexpected error occurred."},
        status_code=500,
    )
