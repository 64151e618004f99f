"""The app for ASGI servers that import it by name, e.g. several uvicorn workers:

    PROMETHEUS_MULTIPROC_DIR=/run/token-service-metrics \\
        uvicorn --factory service.asgi:create_from_environment --workers 4 --port 8000

Each worker calls the factory, so each reads the same environment and opens its own pool.
"""

from __future__ import annotations

from starlette.applications import Starlette

from tokenrota_server.app import create_app
from tokenrota_server.cli import settings_from_environment
from tokenrota_server.telemetry import configure_logging


def create_from_environment() -> Starlette:
    """The service configured from the environment, logging JSON lines."""
    configure_logging()
    return create_app(settings_from_environment())
