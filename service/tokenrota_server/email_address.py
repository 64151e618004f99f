"""An email address as this service takes it: one RFC 5321 mailbox, `local@domain`, nothing else.

Not an RFC 5322 address: no display name, comment, quoted string, group, list or encoded word,
because whatever parses the address later (a mail library, an SMTP server) may read those as
other recipients. The local part is a dot-atom of ASCII characters, kept as given (RFC 5321
lets its server treat case as it likes); the domain passes IDNA (UTS #46, STD3 rules) and is
stored as lower-case ASCII, its A-labels (`bücher.example` becomes `xn--bcher-kva.example`).
The whole is at most 254 octets. The normalised form is stored, keys the throttles, and is the
one recipient of every message.
"""

from __future__ import annotations

import re

import idna

from tokenrota_server.errors import InvalidInput

MAX_EMAIL_OCTETS = 254  # RFC 5321's forward path, less its angle brackets
MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
# RFC 5322 §3.2.3 dot-atom: atext runs joined by single dots.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
# An RFC 2047 encoded word's delimiters: atext allows them, some mail readers decode them.
_ENCODED_WORD = re.compile(r"=\?|\?=")


def normalize_email(raw: str) -> str:
    """The one mailbox `raw` names, normalised; raise `InvalidInput` for anything else."""
    local, at, domain = raw.rpartition("@")
    if (
        not at
        or len(raw) > 4 * MAX_EMAIL_OCTETS  # before IDNA: a bound on its work
        or _DOT_ATOM.fullmatch(local) is None
        or _ENCODED_WORD.search(local)
        or len(local) > MAX_LOCAL_OCTETS
    ):
        raise InvalidInput("The email must be one address, local@domain, and nothing else.")
    ascii_domain = _domain(domain)
    email = f"{local}@{ascii_domain}"
    if len(email) > MAX_EMAIL_OCTETS:
        raise InvalidInput(f"The email must be at most {MAX_EMAIL_OCTETS} characters.")
    return email


def _domain(domain: str) -> str:
    # A trailing dot (the root) would make a second spelling of one domain.
    if not domain or domain.endswith(".") or not domain.isprintable():
        raise InvalidInput("The email's domain is not a valid domain name.")
    try:
        encoded = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise InvalidInput("The email's domain is not a valid domain name.") from None
    labels = encoded.split(".")
    # One label is no public mail domain, and an all-digit last label is an IP address.
    if len(labels) < 2 or labels[-1].isdigit():
        raise InvalidInput("The email's domain is not a valid domain name.")
    return encoded.lower()
