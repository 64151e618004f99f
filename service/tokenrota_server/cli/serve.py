"""Serving: the service under uvicorn, in this process or in several worker processes.

One worker runs the app built here. Several are fresh interpreters that import
`tokenrota_server.asgi` and build their settings from the environment, so this process hands
them its own, completed (development secrets, the embedded Postgres's URL): none generates
secrets or starts a Postgres of its own. They pool their metrics in PROMETHEUS_MULTIPROC_DIR;
without one, the run gets a private temporary directory, removed when it ends.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from tokenrota_server.cli.startup import StartupError
from tokenrota_server.config import Settings

# On SIGTERM, requests in flight get this long to finish before they are cut off.
GRACEFUL_SHUTDOWN_SECONDS = 20
# What each worker imports: a factory that builds the app from the environment.
ASGI_FACTORY = "tokenrota_server.asgi:create_from_environment"


def serve(settings: Settings, environ: dict[str, str], workers: int) -> None:
    """Serve on the settings' host and port until SIGTERM or SIGINT.

    `environ` is the environment the settings were resolved from, handed to the workers.
    Raises `StartupError` if PROMETHEUS_MULTIPROC_DIR names no directory.
    """
    import uvicorn

    with _shared_metrics_directory(environ, workers):
        # Imported after: prometheus-client reads PROMETHEUS_MULTIPROC_DIR when it is imported.
        from tokenrota_server.app import create_app
        from tokenrota_server.telemetry import configure_logging

        configure_logging()
        if workers > 1:
            # Spawned workers inherit this process's environment, not a dict: hand it over.
            os.environ.update(environ)
        app: Starlette | str = ASGI_FACTORY  # each worker builds its own, and freezes it
        if workers == 1:
            app = create_app(settings)
            freeze_start_up_objects()
        uvicorn.run(
            app,
            factory=workers > 1,
            workers=workers,
            **uvicorn_options(settings),
        )


def freeze_start_up_objects() -> None:
    """Leave what importing and building the app made out of every later garbage collection.

    Those objects (modules, routes, the libraries' tables) live as long as the process, yet
    each full collection walks them all again, in the middle of some request: under load that
    pause was a share of /profile's p99 (docs/benchmarks-method.md). Call once per serving process,
    after the app is built; objects made later are collected as before.
    """
    gc.collect()
    gc.freeze()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves the app: `uvicorn.run`'s (and `uvicorn.Config`'s) keyword arguments."""
    from tokenrota_server.http.limits import HttpLimits, protocol_class

    limits = HttpLimits.of(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        # uvloop (uvicorn[standard]) serves about twice the requests of asyncio's loop here;
        # "auto" falls back when it is missing.
        "loop": "auto",
        # httptools, as uvicorn's "auto" picks, with a cap on request heads and read deadlines
        # that uvicorn lacks (tokenrota_server.http.limits).
        "http": protocol_class(limits),
        "proxy_headers": False,
        "server_header": False,
        # Logging is ours (one JSON line per request, from the middleware); uvicorn's would
        # replace it and add a second, plain access line.
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }


@contextlib.contextmanager
def _shared_metrics_directory(environ: dict[str, str], workers: int) -> Iterator[None]:
    """Make sure the workers have a PROMETHEUS_MULTIPROC_DIR to pool their metrics in.

    A directory given in `environ` must exist (`StartupError` otherwise). With several workers
    and none given, a private temporary directory serves this run and is removed when it ends:
    /metrics then counts every worker's requests, since this start.
    """
    given = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        if not Path(given).is_dir():
            raise StartupError(
                f"PROMETHEUS_MULTIPROC_DIR={given} is not a directory; create it (empty, "
                "writable by every worker), or unset it"
            )
        yield
        return
    if workers == 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="tokenrota-metrics-")
    environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
