"""What the pytest plugin's fixtures are made of: a test instance of the server, and its databases.

`tokenrota.pytest_plugin` wires these into fixtures (`token_service`, `token_client`); a suite
that wants an instance outside a fixture uses them directly:

    settings = instance_settings(database_url, access_token_ttl=60)
    async with run_token_service(settings) as service:
        user = await service.create_user()

Importing this module imports the server, asyncpg and uvicorn: it needs the `testing` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.datastructures import Secret

from tokenrota.clock import utc_now
from tokenrota.jws import HMAC_ALGORITHM

try:
    import asyncpg
    import uvicorn
    from tokenrota_server import testing as server_api
    from tokenrota_server.testing import Passwords, Settings, TokenCodec, TokenPair

    from tokenrota.testing_databases import DatabaseSupply, database_url_for, drop_database, execute
except ModuleNotFoundError as error:
    # The same error, named as before (the pytest plugin reads `name`), saying what to install.
    raise ModuleNotFoundError(
        f"tokenrota.testing needs the testing extra ({error.name} is not installed): "
        'pip install "tokenrota[testing]"',
        name=error.name,
    ) from None

# argon2 at its production cost would make each create_user and login take ~100 ms and 64 MiB.
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
# Far more registrations, and passkey sign-ins, from one address than production allows
# (REGISTER_IP_MAX_ATTEMPTS, PASSKEY_OPTIONS_IP_MAX_ATTEMPTS).
LIFTED_ADDRESS_LIMITS = {
    "register_ip_max_attempts": 10_000,
    "passkey_options_ip_max_attempts": 10_000,
}
# One idle connection kept, not two: an instance serves one test, and each connection it opens
# at start is a Postgres backend started (a few milliseconds of server CPU). Busier moments
# open more, up to the pool's maximum, as in production.
SMALL_POOL = {"db_pool_min_size": 1}
# Only ever a test account's password, on a throwaway database.
DEFAULT_PASSWORD = "correct horse battery staple"  # noqa: S105
STARTUP_TIMEOUT = 20.0
# Seconds `TokenService.wait_for_mail` waits by default: the outbox drainer is woken at once by
# the request that queued the message, so it is there in milliseconds unless something is wrong.
MAIL_TIMEOUT = 10.0


@dataclass(frozen=True)
class VerifierSettings:
    """What a resource server needs to check this instance's access tokens on its own."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    access_token_secret: Secret | None = field(repr=False)
    jwks_url: str | None
    leeway: int
    # The longest an access token may live (exp - iat), in seconds.
    max_lifetime: int


@dataclass(frozen=True)
class UserAccount:
    """A user created through the API, with the password that logs them in."""

    id: str
    email: str
    password: str = field(repr=False)


@dataclass
class TotpAccount:
    """A user with a live TOTP factor: the password, the factor's secret and the recovery
    codes, and `next_code()`, which hands out each time step's code once, as the service
    accepts it once."""

    id: str
    email: str
    password: str = field(repr=False)
    factor_id: str
    secret: str = field(repr=False)
    recovery_codes: tuple[str, ...] = field(repr=False)
    last_step: int = field(repr=False, default=0)

    def code(self, at: datetime | None = None) -> str:
        """The code of the time step of `at` (now by default), used or not."""
        return server_api.totp_code(self.secret, server_api.totp_step(at or utc_now()))

    def next_code(self) -> str:
        """A code the service has not accepted yet: this step's, or the next one's (one step
        of drift is accepted). Raises `RuntimeError` when both were used: wait 30 seconds."""
        now = server_api.totp_step(utc_now())
        step = max(now, self.last_step + 1)
        if step > now + 1:
            raise RuntimeError("both usable TOTP steps were used; wait for the next step")
        self.last_step = step
        return server_api.totp_code(self.secret, step)


@dataclass(frozen=True)
class ClientCredentials:
    """A service client's id and its secret (shown once, as in production)."""

    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SentMail:
    """A message the instance sent to its development mailbox, as a test reads it."""

    to: str
    subject: str
    # Everything below carries the live token: kept out of repr, so out of failure reports.
    text: str = field(repr=False)
    html: str | None = field(repr=False)
    # The message's link (PASSWORD_RESET_URL or EMAIL_VERIFICATION_URL, with ?token=...).
    link: str | None = field(repr=False)
    # The link's token: what POST /password/reset or POST /email/verify takes.
    token: str | None = field(repr=False)


class TokenService:
    """A running instance: its URL and settings, and shortcuts to arrange users and tokens."""

    def __init__(self, settings: Settings, base_url: str) -> None:
        assert settings.database_url is not None
        self.settings = settings
        self.base_url = base_url
        self.database_url = settings.database_url
        self._codec = TokenCodec(settings)
        self._http = local_client(base_url)
        self._passwords: Passwords | None = None

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._passwords is not None:
            self._passwords.close()

    async def create_user(
        self, email: str | None = None, password: str | None = None
    ) -> UserAccount:
        """Register a user through `POST /register` (a fresh email by default)."""
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        password = password or DEFAULT_PASSWORD
        response = await self._http.post("/register", json={"email": email, "password": password})
        _expect(response, 201)
        # The email as the service stored it (its domain normalised), which mail is sent to.
        user = response.json()["user"]
        return UserAccount(id=user["id"], email=user["email"], password=password)

    async def login(self, email: str, password: str = DEFAULT_PASSWORD) -> TokenPair:
        """Log in through `POST /login`; the new session's token pair."""
        response = await self._http.post("/login", json={"email": email, "password": password})
        _expect(response, 200)
        body = response.json()
        return TokenPair(
            access_token=body["access_token"],
            expires_in=body["expires_in"],
            refresh_token=body["refresh_token"],
            refresh_expires_in=body["refresh_expires_in"],
        )

    async def create_totp_user(
        self, email: str | None = None, password: str | None = None
    ) -> TotpAccount:
        """A user with a live TOTP factor, enrolled through the API (`POST /mfa/totp`, then
        its verify with the previous step's code, so that this step's is still unused)."""
        account = await self.create_user(email, password)
        pair = await self.login(account.email, account.password)
        headers = {"Authorization": f"Bearer {pair.access_token}"}
        started = await self._http.post("/mfa/totp", json={}, headers=headers)
        _expect(started, 201)
        factor_id, secret = started.json()["factor_id"], started.json()["secret"]
        step = server_api.totp_step(utc_now()) - 1
        verified = await self._http.post(
            f"/mfa/totp/{factor_id}/verify",
            json={"code": server_api.totp_code(secret, step)},
            headers=headers,
        )
        _expect(verified, 200)
        return TotpAccount(
            id=account.id,
            email=account.email,
            password=account.password,
            factor_id=factor_id,
            secret=secret,
            recovery_codes=tuple(verified.json()["recovery_codes"]),
            last_step=step,
        )

    async def login_with_totp(
        self, account: TotpAccount, *, resource: str | None = None
    ) -> TokenPair:
        """Log in with the password and the next unused code (`POST /login`, 403
        mfa_required, then `POST /login/mfa`); the new aal2 session's token pair, its access
        token for `resource` (RFC 8707) when given."""
        target = {} if resource is None else {"resource": resource}
        started = await self._http.post(
            "/login", json={"email": account.email, "password": account.password, **target}
        )
        _expect(started, 403)
        response = await self._http.post(
            "/login/mfa",
            json={
                "mfa_token": started.json()["mfa_token"],
                "code": account.next_code(),
                **target,
            },
        )
        _expect(response, 200)
        body = response.json()
        return TokenPair(
            access_token=body["access_token"],
            expires_in=body["expires_in"],
            refresh_token=body["refresh_token"],
            refresh_expires_in=body["refresh_expires_in"],
        )

    @property
    def admin_audience(self) -> str:
        """The admin API's audience (ADMIN_AUDIENCE): the `resource` an operator logs in for."""
        return self.settings.admin_api_audience

    async def create_operator(
        self, email: str | None = None, password: str | None = None, *, role: str = "operator"
    ) -> TotpAccount:
        """A person who may use the admin API: a user with a live TOTP factor (as
        `create_totp_user`) holding `role`, which is created with the scope `admin` alone if no
        role has that name yet."""
        account = await self.create_totp_user(email, password)
        connection = await asyncpg.connect(self.database_url)
        try:
            await server_api.grant_operator_role(
                connection, user_id=account.id, role=role, now=utc_now()
            )
        finally:
            await connection.close()
        return account

    async def operator_token(self, account: TotpAccount) -> str:
        """An access token for the admin API: `login_with_totp` for its audience (a new aal2
        session). Use it as `Authorization: Bearer <token>` on `/admin/...`."""
        pair = await self.login_with_totp(account, resource=self.admin_audience)
        return pair.access_token

    async def create_client(
        self, scopes: tuple[str, ...] | list[str] = (), name: str | None = None
    ) -> ClientCredentials:
        """A service client with these scopes, written straight into the `clients` table.

        The row is what migration 0002 defines: an argon2id hash of a random secret, never
        the secret itself. `POST /oauth/token` authenticates against it.
        """
        if self._passwords is None:
            self._passwords = Passwords(self.settings)
        client_id = f"test-client-{secrets.token_hex(6)}"
        client_secret = secrets.token_urlsafe(32)
        connection = await asyncpg.connect(self.database_url)
        try:
            await server_api.insert_client(
                connection,
                self._passwords,
                client_id=client_id,
                client_secret=client_secret,
                name=name or client_id,
                scopes=tuple(scopes),
                now=utc_now(),
            )
        finally:
            await connection.close()
        return ClientCredentials(client_id, client_secret, tuple(scopes))

    async def wait_for_mail(
        self, to: str, *, count: int = 1, within: float = MAIL_TIMEOUT
    ) -> SentMail:
        """The `count`-th message the instance sent to `to` (the first by default), once sent.

        The instance writes mail to a mailbox of its own (a temporary directory, unless the
        settings name a `data_dir`), from its outbox, just after the request that queued it. A
        test that asks twice (two resets) passes `count=2` for the second message. Raises
        `AssertionError` if it has not arrived `within` seconds.
        """
        deadline = asyncio.get_running_loop().time() + within
        while True:
            sent = await asyncio.to_thread(server_api.messages_in_mailbox, self.settings, to)
            if len(sent) >= count:
                return _sent_mail(sent[count - 1])
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{len(sent)} message(s) to {to} within {within} s, not {count}"
                )
            await asyncio.sleep(0.02)

    def issue_access_token(
        self,
        sub: str,
        *,
        scope: str = "",
        expires_in: int | None = None,
        email: str | None = None,
        client_id: str | None = None,
        now: datetime | None = None,
        audience: str | None = None,
        aal2: bool = False,
        auth_time: datetime | None = None,
    ) -> str:
        """An access token signed as this instance signs them, without any flow.

        With `client_id` it is a service's token; otherwise a person's, in a session of its own
        that exists only in the token (a resource server verifies it; the service's own
        `/profile`, which checks the session row, refuses it). `now` in the past makes an
        expired token; `expires_in` can be at most the service's access-token lifetime.
        `audience` is the resource URI the token is for (the service's own audience by default).
        A person's token says a password login (`amr` pwd, `acr` aal1) or, with `aal2`, one
        with a second factor; `auth_time` defaults to `now`.
        """
        lifetime = self.settings.access_token_ttl
        if expires_in is not None and not 0 < expires_in <= lifetime:
            raise ValueError(f"expires_in must be between 1 and {lifetime} seconds")
        is_client = client_id is not None
        codec = self._codec
        if audience is not None:
            codec = TokenCodec(replace(self.settings, token_audience=audience))
        token, _ = codec.mint_access(
            subject=sub,
            now=now or utc_now(),
            scope=scope,
            session_id=None if is_client else str(uuid.uuid4()),
            email=None if is_client else (email or f"{sub}@example.test"),
            client_id=client_id,
            ttl=expires_in,
            strength=None
            if is_client
            else server_api.Strength(
                amr=("pwd", "otp", "mfa") if aal2 else ("pwd",),
                acr="aal2" if aal2 else "aal1",
                auth_time=auth_time or now or utc_now(),
            ),
        )
        return token

    @property
    def verifier_settings(self) -> VerifierSettings:
        key_set = self._codec.jwks()
        if key_set is not None:
            # An asymmetric key signs: resource servers fetch the public keys, never a secret.
            algorithms = tuple(sorted({key["alg"] for key in key_set["keys"]}))
            secret, jwks_url = None, f"{self.base_url}/.well-known/jwks.json"
        else:
            algorithms = (HMAC_ALGORITHM,)
            secret, jwks_url = self.settings.access_token_secret, None
        return VerifierSettings(
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            algorithms=algorithms,
            access_token_secret=secret,
            jwks_url=jwks_url,
            leeway=self.settings.jwt_leeway,
            max_lifetime=self.settings.access_token_ttl,
        )


def local_client(base_url: str) -> httpx.AsyncClient:
    """An httpx client for an instance's plain-HTTP `base_url`.

    It shares one TLS context with every other client made here: httpx would otherwise read the
    whole CA bundle for each new client (tens of milliseconds, hundreds on a busy machine), for
    connections that never use TLS.
    """
    return httpx.AsyncClient(base_url=base_url, verify=_tls_context())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def instance_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test instance: fresh random secrets, cheap argon2, and room to register.

    Every user a test creates registers (and asks for passkey options) from 127.0.0.1, so those
    per-address throttles are lifted; a test of a throttle itself sets `register_ip_max_attempts`
    or `passkey_options_ip_max_attempts`.
    """
    values: dict[str, Any] = {
        "env": "test",
        **CHEAP_ARGON2,
        **LIFTED_ADDRESS_LIMITS,
        **SMALL_POOL,
        **overrides,
    }
    return Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        mfa_encryption_key=Secret(secrets.token_urlsafe(48)),
        database_url=database_url,
        **values,
    )


@contextlib.asynccontextmanager
async def run_token_service(settings: Settings) -> AsyncIterator[TokenService]:
    """Serve `settings` with uvicorn on a free local port, in a thread with its own event loop.

    Its own thread, so a test that blocks its loop (a sync client, a debugger) cannot stall
    the service it is talking to. Unless the settings name a `data_dir`, the instance keeps its
    files (the development mailbox) in a temporary directory, removed when it stops.
    """
    with contextlib.ExitStack() as stack:
        if settings.data_dir == server_api.DEFAULT_DATA_DIR:
            # Not the working directory's `.data`: the suite's project would collect the
            # instances' mail (live reset links) there, run after run.
            private = stack.enter_context(tempfile.TemporaryDirectory(prefix="tokenrota-test-"))
            settings = replace(settings, data_dir=Path(private))
        async with _serving(settings) as service:
            yield service


@contextlib.asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[TokenService]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    if settings.public_url is None:
        # The metadata names endpoints from settings, never from a request: the free port.
        settings = replace(settings, public_url=f"http://{host}:{port}")
    # The served protocol's limits (head cap, read deadlines) are production's, from settings.
    config = uvicorn.Config(
        server_api.create_app(settings),
        lifespan="on",
        log_level="warning",
        access_log=False,
        http=server_api.http_protocol(settings),
    )
    server = _PromptServer(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="token-service", daemon=True
    )
    thread.start()
    try:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("the token service did not start; see its log above")
            await asyncio.sleep(0.005)
        service = TokenService(settings, f"http://{host}:{port}")
        try:
            yield service
        finally:
            await service.aclose()
    finally:
        server.stop()
        await asyncio.to_thread(thread.join, STARTUP_TIMEOUT)
        listener.close()


class _PromptServer(uvicorn.Server):
    """uvicorn's server, which stops as soon as it is asked rather than at its next tick.

    uvicorn looks at `should_exit` every 0.1 s: half of that, on average, added to every test.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own sleeps 0.1 s after asking the connections to close, and then checks
        # every 0.1 s: a test's clients have closed theirs by now, so this mostly waits for none.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while self.server_state.connections or self.server_state.tasks:
            if loop.time() > deadline:
                for task in self.server_state.tasks:
                    task.cancel()
                break
            await asyncio.sleep(0.002)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()

    def stop(self) -> None:
        """Ask the server to shut down, from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            # Its loop may have ended already (a failed start-up): then there is none to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)


def _sent_mail(message: EmailMessage) -> SentMail:
    summary = server_api.message_summary(message)
    link = summary["link"]
    tokens = parse_qs(urlsplit(link).query).get("token", []) if link else []
    return SentMail(
        to=str(summary["to"]),
        subject=str(summary["subject"]),
        text=str(summary["text"]),
        html=summary["html"],
        link=link,
        token=tokens[0] if tokens else None,
    )


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, not {status}: {response.text}"
        )


def start_test_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres under `data_dir` for tests; its URL.

    It is stopped when the last process using it ends (`tokenrota_server.db.embedded`).
    """
    url = server_api.start_embedded(data_dir)
    # A throwaway server of our own: without fsync, DROP DATABASE after each test takes ~20 ms
    # instead of ~600 ms; without full-page images and commit flushes, a little less WAL work
    # per test (docs/testing.md). Never done to a TEST_DATABASE_URL server, which may matter to
    # someone.
    asyncio.run(
        execute(
            url,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "SELECT pg_reload_conf()",
        )
    )
    return url


def create_template(server_url: str) -> str:
    """A new database on `server_url`, migrated to head, for instances to clone; its name.

    Synchronous, outside any event loop: alembic's env.py runs its own.
    """
    # One per process: a leftover of a killed run with the same pid is dropped first.
    name = f"token_service_template_{os.getpid()}"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(execute(server_url, drop, f'CREATE DATABASE "{name}"'))
    server_api.migrate(database_url_for(server_url, name))
    return name


__all__ = [
    "ClientCredentials",
    "DatabaseSupply",
    "TokenService",
    "TotpAccount",
    "UserAccount",
    "VerifierSettings",
    "create_template",
    "database_url_for",
    "drop_database",
    "execute",
    "instance_settings",
    "local_client",
    "run_token_service",
    "start_test_postgres",
]
