"""The app for ASGI servers that import it by name, e.g. several uvicorn workers.

`tokenrota serve --workers 4` runs it that way, after checking the database and the port.
Run by hand, give it complete settings (DATABASE_URL and both secrets), or each worker would
start its own embedded Postgres or read the development secrets for itself:

    PROMETHEUS_MULTIPROC_DIR=/run/tokenrota-metrics \\
        uvicorn --factory tokenrota_server.asgi:create_from_environment --workers 4 --port 8000

Each worker calls the factory, so each reads the same environment and opens its own pool.
"""

from __future__ import annotations

import logging
import os
import sys

from starlette.applications import Starlette

from tokenrota_server.app import create_app
from tokenrota_server.cli.serve import freeze_start_up_objects
from tokenrota_server.cli.startup import (
    StartupError,
    check_mail_delivery,
    settings_from_environment,
)
from tokenrota_server.errors import ConfigError
from tokenrota_server.telemetry import configure_logging

# uvicorn's exit status for "could not start": its supervisor then stops instead of
# restarting a worker that would fail the same way forever.
STARTUP_FAILURE = 3


def create_from_environment() -> Starlette:
    """The service configured from the environment, logging JSON lines.

    Refused settings end the process: one line on stderr, exit status 3.
    """
    try:
        settings = settings_from_environment(dict(os.environ))
        check_mail_delivery(settings)
    except (ConfigError, StartupError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None
    configure_logging()
    # The middleware logs each request; uvicorn's access line would be a second, plain copy.
    logging.getLogger("uvicorn.access").propagate = False
    app = create_app(settings)
    freeze_start_up_objects()
    return app
