"""tokenrota_server.email_address: one RFC 5321 mailbox in, its normal form out, or 422."""

from __future__ import annotations

import pytest
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import InvalidInput

# What an RFC 5322 parser may read as other recipients, or decode into one, and what is no
# mailbox at all: each is refused whole.
NOT_ONE_MAILBOX = [
    "x,victim@corp.test",
    "atk@evil.test,victim@corp.test",
    "Victim<atk@evil.test>",
    "Victim <atk@evil.test>",
    "<atk@evil.test>",
    '"Victim" <atk@evil.test>',
    '"victim@corp.test"@evil.test',
    "atk@evil.test (victim@corp.test)",
    "atk(comment)@evil.test",
    "atk@(comment)evil.test",
    "group:victim@corp.test;",
    "undisclosed:;@evil.test",
    "=?utf-8?q?victim=40corp.test?=@evil.test",
    "a=?x?=b@evil.test",
    "atk@evil.test ",
    " atk@evil.test",
    "at k@evil.test",
    "atk@evil.test\r\nBcc: victim@corp.test",
    "atk\t@evil.test",
    "atk@evil.test\x00",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@b@example.com",
    "a@[127.0.0.1]",
    "a@127.0.0.1",
    "a@localhost",
    "a@example.com.",
    "a@-example.com",
    "a@exa_mple.com",
    "a@xn--zz.example",
    "ünï@example.com",
    "a@",
    "@example.com",
    "a",
    "",
    "x" * 65 + "@example.com",
    "a@" + ".".join(["x" * 60] * 5),
]


@pytest.mark.parametrize("raw", NOT_ONE_MAILBOX)
def test_anything_but_one_mailbox_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_email(raw)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Ann.Lee@Example.COM", "Ann.Lee@example.com"),
        ("o'reilly+tag@example.com", "o'reilly+tag@example.com"),
        ("{x}|~!#$%&*/=^_`?-@sub.example.co.uk", "{x}|~!#$%&*/=^_`?-@sub.example.co.uk"),
        ("ann@bücher.example", "ann@xn--bcher-kva.example"),
        ("ann@BÜCHER.example", "ann@xn--bcher-kva.example"),
        ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),
        ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    ],
)
def test_a_mailbox_is_normalised_once_local_part_kept_domain_as_lower_case_a_labels(
    raw: str, normal: str
) -> None:
    assert normalize_email(raw) == normal
    assert normalize_email(normal) == normal


def test_the_limit_is_254_octets_after_the_domain_is_encoded() -> None:
    """254 octets pass; one more is refused, also when only its A-labels make it longer."""
    domain = ".".join(["d" * 63, "d" * 63, "d" * 55, "example"])
    fits = "x" * (254 - 1 - len(domain)) + "@" + domain
    unicode_domain = domain.replace("d" * 55, "ü" + "d" * 48)

    assert len(normalize_email(fits)) == 254
    with pytest.raises(InvalidInput):
        normalize_email("x" + fits)
    with pytest.raises(InvalidInput):
        normalize_email("x" * (254 - 1 - len(domain)) + "@" + unicode_domain)
