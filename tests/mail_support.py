"""A real SMTP server for the mail tests (aiosmtpd, in a thread of its own), its self-signed
certificate, and helpers to read what the service queued and what the server received.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tokenrota_server.config import Settings
from tokenrota_server.mailer import messages_in_mailbox
from tokenrota_server.outbox import Sealer

SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-Pa55word"  # the test server's own account
TOKEN_IN_LINK = re.compile(r"token=([A-Za-z0-9_-]+)")


@dataclass
class Inbox:
    """The aiosmtpd handler: keeps what it accepts; `refuse` makes it answer 451 to DATA."""

    messages: list[EmailMessage] = field(default_factory=list)
    # Each accepted message's envelope recipients (RCPT TO), in the order of `messages`.
    envelopes: list[list[str]] = field(default_factory=list)
    refuse: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(
        self, server: Any, session: Any, envelope: Any
    ) -> str:  # aiosmtpd names it
        if self.refuse:
            return "451 4.3.0 Try again later"
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append(parsed)
            self.envelopes.append(list(envelope.rcpt_tos))
        return "250 OK"


def write_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@contextlib.contextmanager
def running_smtp(
    inbox: Inbox,
    port: int,
    cert: tuple[Path, Path],
    *,
    mode: str = "starttls",
) -> Iterator[Controller]:
    """An SMTP server on 127.0.0.1:`port` until the block ends.

    `mode`: "starttls" (offers STARTTLS, requires it and AUTH), "implicit" (TLS from the first
    byte, AUTH required), "plain" (no TLS at all, no AUTH).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    options: dict[str, Any] = {}
    if mode == "starttls":
        options = {
            "tls_context": context,
            "require_starttls": True,
            "authenticator": _authenticate,
            "auth_required": True,
        }
    elif mode == "implicit":
        # No AUTH: aiosmtpd counts only STARTTLS as TLS for AUTH, and warns otherwise.
        options = {"ssl_context": context}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


async def queued_token(db: asyncpg.Connection, settings: Settings, recipient: str) -> str:
    """The token in the newest message queued for `recipient`, opened as the outbox would.

    The app's outbox drainer may have sent it already, which blanks the row's bodies: then the
    token is read from the message it wrote to the development mailbox."""
    row = await db.fetchrow(
        "SELECT text_body, sent_at FROM mail_outbox WHERE lower(recipient) = lower($1)"
        " ORDER BY id DESC LIMIT 1",
        recipient,
    )
    assert row is not None, f"no message queued for {recipient}"
    if row["sent_at"] is not None:
        sent = messages_in_mailbox(settings, recipient)
        assert sent, f"a message for {recipient} was sent, but not to the mailbox"
        return token_in(parts_of(sent[-1])[0])
    text = Sealer(settings).open(row["text_body"])
    assert text is not None
    return token_in(text)


def token_in(text: str) -> str:
    found = TOKEN_IN_LINK.search(text)
    assert found, "no link with a token"
    return found.group(1)


def parts_of(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts of a received message."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


class SmtpServer:
    """The test's SMTP server, which a test may stop and start again on the same port."""

    def __init__(self, certificate: tuple[Path, Path], *, mode: str = "starttls") -> None:
        from tests.processes import free_port

        self.certificate = certificate
        self.mode = mode
        self.port = free_port()
        self.inbox = Inbox()
        self._running: contextlib.ExitStack | None = None

    @property
    def url(self) -> str:
        if self.mode == "implicit":
            return f"smtps://127.0.0.1:{self.port}"
        return f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{self.port}"

    def start(self) -> SmtpServer:
        stack = contextlib.ExitStack()
        stack.enter_context(running_smtp(self.inbox, self.port, self.certificate, mode=self.mode))
        self._running = stack
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None
