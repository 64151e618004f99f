"""Mail: composing the reset and verification messages, and handing one to SMTP or to a file.

Delivery is blocking (`smtplib`); the outbox calls `deliver` in a thread. `SMTP_URL` decides
how: `smtps://` speaks TLS from the first byte; `smtp://` upgrades with STARTTLS whenever the
server offers it, and when it does not, refuses to go on if there are credentials to send or
the server is not on this machine (a reset link is as good as a password). Certificates are
always verified, against `SMTP_CA_FILE` if set, else the system's CAs. Without `SMTP_URL`
outside production, a message becomes an `.eml` file under `DATA_DIR/mail/` (the development
mailbox), and the log names the file, never the link. A file appears whole (written under
another name, then renamed), and `MailboxBell` wakes whoever waits for one in this process.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tokenrota_server.config import Settings
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import InvalidInput

logger = logging.getLogger("tokenrota.mail")

SMTP_TIMEOUT = 30  # seconds for each SMTP exchange: a stuck server must not hold the outbox
SMTP_PORT = 587  # submission, with STARTTLS
SMTPS_PORT = 465  # submission over implicit TLS (RFC 8314)
MAILBOX_FOLDER = "mail"


class MailboxBell:
    """Rung by this process's outbox after each delivery; `rung()` is the event of the next one.

    Only this process rings it. Another may write the same mailbox (a second worker of
    `serve --workers`, or another instance when this one has MAIL_POLL_INTERVAL=0), so a
    waiter also looks now and then, at the folder's list of names only (`mailbox_names`).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def rung(self) -> asyncio.Event:
        """The event the next delivery sets; take it before looking at the mailbox."""
        return self._event

    def ring(self) -> None:
        rung, self._event = self._event, asyncio.Event()
        rung.set()


class DeliveryFailed(Exception):
    """A message could not be handed over; `reason` is short and holds no message content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Mail:
    """One message to send: the bodies hold a token, so repr hides them."""

    recipient: str
    subject: str
    text: str = field(repr=False)
    html: str = field(repr=False)


def link(page_url: str, token: str) -> str:
    """`page_url` with `token=` appended as its last query parameter."""
    separator = "&" if "?" in page_url else "?"
    return f"{page_url}{separator}token={token}"


def reset_mail(settings: Settings, recipient: str, token: str) -> Mail:
    """The password-reset message, its link built from configuration only (never a request)."""
    url = link(settings.reset_page_url, token)
    minutes = settings.password_reset_ttl // 60
    return _mail(
        recipient,
        subject="Reset your password",
        lines=[
            "Someone asked to reset the password of the account with this email address.",
            f"To choose a new password, open this link within {minutes} minutes:",
        ],
        url=url,
        closing="If it was not you, ignore this message: your password stays as it is.",
    )


def verification_mail(settings: Settings, recipient: str, token: str) -> Mail:
    """The email-verification message."""
    url = link(settings.verification_page_url, token)
    hours = settings.email_verification_ttl // 3600
    return _mail(
        recipient,
        subject="Verify your email address",
        lines=[
            "Please confirm that this email address belongs to your account.",
            f"Open this link within {hours} hours:",
        ],
        url=url,
        closing="If you did not create an account, ignore this message.",
    )


def invitation_mail(settings: Settings, recipient: str, token: str) -> Mail:
    """An operator's invitation: a link to choose a password, which also verifies the email."""
    url = link(settings.invitation_page_url, token)
    hours = settings.invitation_ttl // 3600
    return _mail(
        recipient,
        subject="You are invited: choose your password",
        lines=[
            "An administrator created an account for this email address.",
            f"To choose its password, open this link within {hours} hours:",
        ],
        url=url,
        closing="If you did not expect this, ignore this message: nothing happens without it.",
    )


def _mail(recipient: str, *, subject: str, lines: list[str], url: str, closing: str) -> Mail:
    text = "\n\n".join([*lines, url, closing]) + "\n"
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    quoted = html.escape(url, quote=True)
    body = (
        f"<!doctype html><html><body>{paragraphs}"
        f'<p><a href="{quoted}">{quoted}</a></p><p>{html.escape(closing)}</p></body></html>'
    )
    return Mail(recipient=recipient, subject=subject, text=text, html=body)


def email_message(settings: Settings, mail: Mail, now: datetime) -> EmailMessage:
    """The MIME message: multipart/alternative with a text and an HTML part.

    The strict policy refuses a header value with CR or LF, so nothing can add a header.
    """
    message = EmailMessage(policy=policy.SMTP.clone(raise_on_defect=True))
    message["From"] = settings.mail_from
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2].strip(">"))
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


def deliver(settings: Settings, mail: Mail, *, name: str, now: datetime) -> None:
    """Hand `mail` over: to SMTP, or to the development mailbox as `<name>.eml`.

    Blocking; raises `DeliveryFailed` with a reason fit for a log and a column.
    """
    # Checked again here, not only at input: a row stored before the check, or any other path
    # to the outbox, must not turn one recipient into a list. (A domain stored in capitals
    # before the check is still one mailbox, sent to as stored.)
    try:
        one_mailbox = normalize_email(mail.recipient).lower() == mail.recipient.lower()
    except InvalidInput:
        one_mailbox = False
    if not one_mailbox:
        raise DeliveryFailed("the recipient is not one mailbox")
    try:
        message = email_message(settings, mail, now)
    except (ValueError, TypeError) as error:
        raise DeliveryFailed(f"unusable message ({type(error).__name__})") from None
    if settings.smtp_url is None:
        _write_to_mailbox(settings, message, name=f"{now:%Y%m%dT%H%M%S%f}-{name}")
        return
    try:
        _send_over_smtp(settings, message, mail.recipient)
    except smtplib.SMTPResponseException as error:
        raise DeliveryFailed(f"SMTP {error.smtp_code}") from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryFailed("SMTP recipient refused") from None
    except (smtplib.SMTPException, OSError) as error:
        # OSError covers refused connections, timeouts and certificate failures (ssl.SSLError).
        raise DeliveryFailed(type(error).__name__) from None


def _send_over_smtp(settings: Settings, message: EmailMessage, recipient: str) -> None:
    parts = urlsplit(str(settings.smtp_url))
    host = parts.hostname or ""
    context = ssl.create_default_context(
        cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    )
    smtp: smtplib.SMTP
    if parts.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(
            host, parts.port or SMTPS_PORT, timeout=SMTP_TIMEOUT, context=context
        )
    else:
        smtp = smtplib.SMTP(host, parts.port or SMTP_PORT, timeout=SMTP_TIMEOUT)
    with smtp:
        smtp.ehlo()
        if parts.scheme == "smtp":
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif parts.username or not _is_loopback(host):
                raise DeliveryFailed(
                    "the SMTP server offers no STARTTLS; refusing to send in clear"
                )
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        # The envelope names the one recipient; left to itself, smtplib would parse To.
        smtp.send_message(message, to_addrs=[recipient])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mailbox_folder(settings: Settings) -> Path:
    return settings.data_dir / MAILBOX_FOLDER


def _write_to_mailbox(settings: Settings, message: EmailMessage, *, name: str) -> None:
    folder = mailbox_folder(settings)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{name}.eml"
        # Written aside, then renamed: a reader never parses half a message. 0600 from the
        # start: the message holds a live token.
        partial = folder / f"{name}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(message.as_bytes())
        os.replace(partial, path)
    except OSError as error:
        raise DeliveryFailed(f"cannot write to the mailbox ({type(error).__name__})") from None
    logger.info("mail written to the development mailbox: %s", path)


def mailbox_names(settings: Settings) -> frozenset[str]:
    """The names of the development mailbox's messages: what changes when one arrives, at the
    cost of a directory listing rather than parsing every message."""
    try:
        return frozenset(
            name for name in os.listdir(mailbox_folder(settings)) if name.endswith(".eml")
        )
    except OSError:
        return frozenset()


def latest_in_mailbox(settings: Settings, recipient: str | None = None) -> EmailMessage | None:
    """The newest message of the development mailbox (to `recipient`, if given); None if none."""
    messages = messages_in_mailbox(settings, recipient)
    return messages[-1] if messages else None


def messages_in_mailbox(settings: Settings, recipient: str | None = None) -> list[EmailMessage]:
    """The development mailbox's messages (to `recipient`, if given), oldest first."""
    folder = mailbox_folder(settings)
    if not folder.is_dir():
        return []
    found = []
    # Names start with the time written, to the microsecond: their order is the sending order.
    for path in sorted(folder.glob("*.eml")):
        parsed = _read(path)
        if parsed is None:
            continue
        if recipient is None or str(parsed["To"]).lower() == recipient.lower():
            found.append(parsed)
    return found


def _read(path: Path) -> EmailMessage | None:
    try:
        parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    except OSError:
        return None
    return parsed if isinstance(parsed, EmailMessage) else None


def message_summary(message: EmailMessage) -> dict[str, str | None]:
    """A mailbox message as JSON: headers, both parts, and the link it carries."""
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    text = text_part.get_content() if text_part is not None else ""
    links = [line for line in text.splitlines() if "token=" in line and "://" in line]
    return {
        "to": str(message["To"]),
        "from": str(message["From"]),
        "subject": str(message["Subject"]),
        "date": str(message["Date"]) if message["Date"] else None,
        "text": text,
        "html": html_part.get_content() if html_part is not None else None,
        "link": links[0].strip() if links else None,
    }
