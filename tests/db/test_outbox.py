"""Mail goes out over real SMTP (aiosmtpd: STARTTLS, implicit TLS, AUTH), after the request,
exactly once: retried while the server is down or refusing, never sent twice by racing drainers.
Without SMTP_URL in development it lands in the .eml mailbox; production refuses to start."""

from __future__ import annotations

import asyncio
import logging
import stat
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.datastructures import Secret
from tokenrota_server import mailer
from tokenrota_server.config import Settings
from tokenrota_server.outbox import Outbox, deliver_due, retry_delay

from tests.cli.test_config import (
    STRONG_A,
    STRONG_B,
    STRONG_C,
    assert_one_line_without_secrets,
    run_cli,
)
from tests.mail_support import SmtpServer, parts_of, token_in
from tests.support import FakeClock, register, serve

NEW_PASSWORD = "a brand new passphrase"
WAIT_FOR_MAIL = 20.0  # seconds a test waits for the background drainer before failing
MAILBOX_OTHERS = 20  # messages to others in the mailbox a waiter looks through


def smtp_settings(settings: Settings, server: SmtpServer, **changes: Any) -> Settings:
    """The test settings sending to `server`, trusting its certificate; no background drainer
    unless `mail_poll_interval` is given."""
    return replace(
        settings,
        smtp_url=Secret(server.url),
        smtp_ca_file=server.certificate[0],
        **{"mail_poll_interval": 0, **changes},
    )


async def deliver(settings: Settings, clock: FakeClock) -> int:
    """One drainer's round, as the server's background task runs it; how many it sent."""
    outbox = Outbox(settings, clock)
    assert settings.database_url is not None
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        return await deliver_due(pool, outbox.sealer, outbox.send, now=clock())
    finally:
        await pool.close()


async def wait_for_mail(server: SmtpServer, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_FOR_MAIL
    while len(server.inbox.messages) < count:
        assert loop.time() < deadline, f"{len(server.inbox.messages)} of {count} messages came"
        await asyncio.sleep(0.05)


async def forgot(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/password/forgot", json={"email": email})
    assert response.status_code == 202, response.text


@pytest.fixture
async def mail_client(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The service sending to the test SMTP server, its drainer running in the background."""
    async with serve(smtp_settings(settings, smtp_server, mail_poll_interval=1), clock) as client:
        yield client


async def test_a_reset_message_arrives_with_both_parts_and_its_link_works_once(
    mail_client: httpx.AsyncClient, smtp_server: SmtpServer, settings: Settings
) -> None:
    """Over STARTTLS with AUTH: text and HTML parts, the configured From, a single-use link."""
    user = await register(mail_client)

    await forgot(mail_client, user["email"])
    await wait_for_mail(smtp_server, 1)

    message = smtp_server.inbox.messages[0]
    text, html = parts_of(message)
    assert message["To"] == user["email"]
    assert message["From"] == settings.mail_from
    assert message["Subject"] == "Reset your password"
    assert message.get_content_type() == "multipart/alternative"
    token = token_in(text)
    assert f"{settings.reset_page_url}&amp;token={token}" in html
    first = await mail_client.post(
        "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    again = await mail_client.post(
        "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert (first.status_code, again.status_code) == (204, 400)
    login = await mail_client.post(
        "/login", json={"email": user["email"], "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_a_message_goes_to_exactly_the_stored_mailbox(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """A domain given in capitals or as Unicode is stored as its lower-case A-labels, and that
    one address is the envelope's only recipient and the To header, byte for byte."""
    settings = smtp_settings(settings, smtp_server)
    async with serve(settings, clock) as client:
        user = await register(client, email="Ann.Lee@BÜCHER.Example")
        await forgot(client, "ann.lee@bücher.example")

    assert await deliver(settings, clock) == 1
    assert user["email"] == "Ann.Lee@xn--bcher-kva.example"
    assert smtp_server.inbox.envelopes == [["Ann.Lee@xn--bcher-kva.example"]]
    assert smtp_server.inbox.messages[0]["To"] == "Ann.Lee@xn--bcher-kva.example"


async def test_a_domain_stored_in_capitals_before_the_check_still_gets_its_mail_as_stored(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """An account stored with `Ann@Mail.Example.COM` (one mailbox, not yet normalised) is sent
    its message at exactly that address."""
    settings = smtp_settings(settings, smtp_server)
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])
    await db.execute("UPDATE mail_outbox SET recipient = 'Ann@Mail.Example.COM'")

    assert await deliver(settings, clock) == 1
    assert smtp_server.inbox.envelopes == [["Ann@Mail.Example.COM"]]
    assert smtp_server.inbox.messages[0]["To"] == "Ann@Mail.Example.COM"


@pytest.mark.parametrize(
    "stored",
    ["x,victim@corp.test", "Victim<atk@evil.test>", "atk@evil.test (victim@corp.test)"],
)
async def test_a_stored_address_that_is_not_one_mailbox_reaches_nobody(
    settings: Settings,
    smtp_server: SmtpServer,
    clock: FakeClock,
    db: asyncpg.Connection,
    stored: str,
) -> None:
    """A message queued for an address list (a row older than the check at input) is refused
    by the mailer itself: no recipient at all gets it, and the row says why."""
    settings = smtp_settings(settings, smtp_server)
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])
    await db.execute("UPDATE mail_outbox SET recipient = $1", stored)

    sent = await deliver(settings, clock)

    assert sent == 0
    assert smtp_server.inbox.messages == []
    assert await db.fetchval("SELECT last_error FROM mail_outbox") == (
        "the recipient is not one mailbox"
    )


async def test_a_refusing_server_delays_the_message_until_it_accepts_then_sends_it_once(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """451 to DATA: forgot still 202; the message waits its backoff, then goes, only once."""
    settings = smtp_settings(settings, smtp_server)
    smtp_server.inbox.refuse = True
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])

    assert await deliver(settings, clock) == 0
    row = await db.fetchrow("SELECT attempts, last_error, next_attempt_at FROM mail_outbox")
    assert (row["attempts"], row["last_error"]) == (1, "SMTP 451")
    assert row["next_attempt_at"] == clock.now + retry_delay(1)
    smtp_server.inbox.refuse = False
    assert await deliver(settings, clock) == 0, "not before its retry time"

    clock.advance(retry_delay(1).total_seconds())
    assert await deliver(settings, clock) == 1
    assert await deliver(settings, clock) == 0
    clock.advance(3600)
    assert await deliver(settings, clock) == 0
    assert len(smtp_server.inbox.messages) == 1


async def test_a_server_that_is_down_gets_the_message_when_it_is_back(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Nothing listening: the failure is recorded without content; delivered after the restart."""
    settings = smtp_settings(settings, smtp_server)
    smtp_server.stop()
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])

    assert await deliver(settings, clock) == 0
    failure = await db.fetchval("SELECT last_error FROM mail_outbox")
    assert failure == "ConnectionRefusedError"
    smtp_server.start()
    clock.advance(retry_delay(1).total_seconds())
    assert await deliver(settings, clock) == 1
    assert [m["To"] for m in smtp_server.inbox.messages] == [user["email"]]


async def test_racing_drainers_send_each_message_exactly_once(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """Four drainers (as four instances) at once over six messages: six arrive, none twice."""
    settings = smtp_settings(settings, smtp_server)
    async with serve(settings, clock) as client:
        users = [await register(client) for _ in range(6)]
        for user in users:
            await forgot(client, user["email"])

    sent = await asyncio.gather(*(deliver(settings, clock) for _ in range(4)))

    assert sum(sent) == 6
    received = sorted(str(m["To"]) for m in smtp_server.inbox.messages)
    assert received == sorted(user["email"] for user in users)


async def test_a_rolled_back_request_sends_nothing(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Token and message are one statement: when it fails, neither exists."""
    settings = smtp_settings(settings, smtp_server)
    async with serve(settings, clock) as client:
        user = await register(client)
        # A sabotaged outbox: the statement that writes the token fails with it.
        await db.execute(
            "ALTER TABLE mail_outbox ADD CONSTRAINT sabotage CHECK (recipient = 'nobody')"
        )
        response = await client.post("/password/forgot", json={"email": user["email"]})
        await db.execute("ALTER TABLE mail_outbox DROP CONSTRAINT sabotage")

    assert response.status_code == 500
    assert "sabotage" not in response.text
    assert await db.fetchval("SELECT count(*) FROM account_tokens") == 0
    assert await deliver(settings, clock) == 0
    assert smtp_server.inbox.messages == []


async def test_sent_messages_keep_no_token_and_queued_ones_keep_it_sealed(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """The outbox never holds a link in clear; once sent, not even sealed."""
    settings = smtp_settings(settings, smtp_server)
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])
    queued = await db.fetchrow("SELECT text_body, html_body FROM mail_outbox")

    await deliver(settings, clock)

    token = token_in(parts_of(smtp_server.inbox.messages[0])[0])
    assert token not in queued["text_body"]
    assert token not in queued["html_body"]
    assert "token=" not in queued["text_body"]
    sent = await db.fetchrow("SELECT text_body, html_body, sent_at FROM mail_outbox")
    assert (sent["text_body"], sent["html_body"]) == ("", "")
    assert sent["sent_at"] == clock.now


async def test_implicit_tls_delivers(
    settings: Settings, smtp_certificate: tuple[Path, Path], clock: FakeClock
) -> None:
    """smtps:// speaks TLS from the first byte."""
    server = SmtpServer(smtp_certificate, mode="implicit").start()
    try:
        settings = smtp_settings(settings, server)
        async with serve(settings, clock) as client:
            user = await register(client)
            await forgot(client, user["email"])
        assert await deliver(settings, clock) == 1
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


async def test_an_untrusted_certificate_is_refused(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Without SMTP_CA_FILE the self-signed certificate fails verification: nothing is sent."""
    settings = replace(smtp_settings(settings, smtp_server), smtp_ca_file=None)
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])

    assert await deliver(settings, clock) == 0
    assert await db.fetchval("SELECT last_error FROM mail_outbox") == "SSLCertVerificationError"
    assert smtp_server.inbox.messages == []


async def test_credentials_are_never_sent_without_starttls(
    settings: Settings,
    smtp_certificate: tuple[Path, Path],
    clock: FakeClock,
    db: asyncpg.Connection,
) -> None:
    """A server that offers no STARTTLS gets neither the password nor the message."""
    server = SmtpServer(smtp_certificate, mode="plain").start()
    try:
        settings = smtp_settings(settings, server)
        async with serve(settings, clock) as client:
            user = await register(client)
            await forgot(client, user["email"])
        assert await deliver(settings, clock) == 0
        failure = await db.fetchval("SELECT last_error FROM mail_outbox")
        assert "no STARTTLS" in failure
        assert server.inbox.messages == []
    finally:
        server.stop()


async def test_without_smtp_in_development_mail_is_an_eml_file_the_log_names(
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The development mailbox: a 0600 .eml under DATA_DIR/mail/, named in the log (never the
    token), and served by GET /dev/mailbox/latest."""
    settings = replace(settings, env="development", data_dir=tmp_path, mail_poll_interval=1)
    caplog.set_level(logging.INFO, logger="tokenrota")
    async with serve(settings, clock) as client:
        user = await register(client)
        await forgot(client, user["email"])
        latest = await client.get("/dev/mailbox/latest", params={"to": user["email"], "wait": "10"})

    assert latest.status_code == 200
    body = latest.json()
    assert body["to"] == user["email"]
    assert body["subject"] == "Reset your password"
    token = token_in(body["link"])
    assert f"token={token}" in body["html"]
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert files[0].name in logged
    assert token not in logged


async def test_the_dev_mailbox_is_not_served_with_smtp_or_in_production(
    settings: Settings, smtp_server: SmtpServer, clock: FakeClock, make_settings: Any
) -> None:
    async with serve(smtp_settings(settings, smtp_server), clock) as client:
        with_smtp = await client.get("/dev/mailbox/latest")
    production = make_settings(env="production", token_issuer="https://auth.example")
    async with serve(production, clock) as client:
        in_production = await client.get("/dev/mailbox/latest")

    assert (with_smtp.status_code, in_production.status_code) == (404, 404)
    assert in_production.json()["error"] == "not_found"


@pytest.mark.parametrize("missing", ["SMTP_URL", "PASSWORD_RESET_URL", "EMAIL_VERIFICATION_URL"])
def test_production_refuses_to_serve_without_mail_settings(tmp_path: Path, missing: str) -> None:
    """One line naming what is missing, exit status 2, before anything connects."""
    environ = {
        "ENV": "production",
        "DATA_DIR": str(tmp_path),
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
        "TOKEN_ISSUER": "https://auth.example",
        "DATABASE_URL": "postgresql://app:S3cret-db-pw@127.0.0.1:1/tokens",
        "SMTP_URL": "smtp://mailer:S3cret-smtp-pw@mail.example:587",
        "PASSWORD_RESET_URL": "https://app.example/reset",
        "EMAIL_VERIFICATION_URL": "https://app.example/verify",
    }
    del environ[missing]

    result = run_cli("serve", environ=environ)

    assert result.returncode == 2
    assert result.stderr.startswith("error: ENV=production needs ")
    assert missing in result.stderr
    assert_one_line_without_secrets(result.stderr, environ)


class CountedReads:
    """Wraps `mailer._read` (one message parsed): counts the parses, and signals the first full
    pass over `expected` files and any parse after it."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.paths: list[Path] = []
        self.first_pass = threading.Event()
        self.again = threading.Event()
        self._read = mailer._read

    def __call__(self, path: Path) -> Any:
        self.paths.append(path)
        if len(self.paths) == self.expected:
            self.first_pass.set()
        elif len(self.paths) > self.expected:
            self.again.set()
        return self._read(path)


def fill_mailbox(settings: Settings, count: int) -> None:
    """`count` messages to others, written as another process would: no bell rung."""
    for number in range(count):
        mail = mailer.reset_mail(settings, f"other-{number}@example.com", "t" * 43)
        mailer.deliver(settings, mail, name=f"other-{number}", now=datetime.now(UTC))


async def test_a_mailbox_waiter_parses_again_only_when_a_message_arrives(
    settings: Settings, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter parses the mailbox once, then not again while nothing arrives (it re-parsed
    every file ten times a second), and is woken when this process's outbox delivers."""
    settings = replace(settings, env="development", data_dir=tmp_path, mail_poll_interval=1)
    fill_mailbox(settings, MAILBOX_OTHERS)
    reads = CountedReads(MAILBOX_OTHERS)
    monkeypatch.setattr(mailer, "_read", reads)
    async with serve(settings, clock) as client:
        email = (await register(client))["email"]
        waiting = asyncio.ensure_future(
            client.get("/dev/mailbox/latest", params={"to": email, "wait": "10"})
        )
        assert await asyncio.to_thread(reads.first_pass.wait, WAIT_FOR_MAIL)
        # A second with nothing new, time for ten re-reads at the old rate: none now.
        quiet = not await asyncio.to_thread(reads.again.wait, 1.0)
        await forgot(client, email)  # its message: the outbox delivers it and rings
        latest = await waiting

    assert quiet
    assert latest.status_code == 200
    assert latest.json()["to"] == email
    # One pass before, one after the delivery (the new file among them).
    assert len(reads.paths) == 2 * MAILBOX_OTHERS + 1


async def test_a_mailbox_waiter_sees_a_message_another_process_wrote(
    settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """No bell rings for a file another worker wrote; the waiter's look at the folder's names
    finds it."""
    settings = replace(settings, env="development", data_dir=tmp_path, mail_poll_interval=0)
    fill_mailbox(settings, 2)
    async with serve(settings, clock) as client:
        waiting = asyncio.ensure_future(
            client.get("/dev/mailbox/latest", params={"to": "elsewhere@example.com", "wait": "10"})
        )
        mail = mailer.reset_mail(settings, "elsewhere@example.com", "t" * 43)
        await asyncio.to_thread(
            mailer.deliver, settings, mail, name="elsewhere", now=datetime.now(UTC)
        )
        latest = await waiting

    assert latest.status_code == 200
    assert latest.json()["to"] == "elsewhere@example.com"
    assert not list((tmp_path / "mail").glob("*.partial"))


@pytest.mark.parametrize("wait", ["nan", "-1", "11", "inf", "soon"])
async def test_the_dev_mailbox_refuses_a_wait_it_could_not_keep(
    settings: Settings, clock: FakeClock, tmp_path: Path, wait: str
) -> None:
    """NaN would never end the wait; the others are out of 0 to 10 seconds."""
    settings = replace(settings, env="development", data_dir=tmp_path, mail_poll_interval=0)
    async with serve(settings, clock) as client:
        response = await client.get("/dev/mailbox/latest", params={"wait": wait})

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
