"""Recovery codes: ten single-use codes, shown once, stored only as MACs (`mfa_crypto`).

A code is 10 characters of Crockford's base32 (50 bits) shown as `xxxxx-xxxxx`. Input is read
leniently: case, spaces and hyphens are ignored, and the letters Crockford reads as digits
(O, I, L) are taken as them.
"""

from __future__ import annotations

import secrets

COUNT = 10
LENGTH = 10
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_READ_AS = str.maketrans({"o": "0", "i": "1", "l": "1"})
# What a code that cannot be one is compared as: no issued code normalizes to it.
NEVER = "!" * LENGTH


def new_codes() -> list[str]:
    """A fresh set, formatted for people."""
    return [
        _formatted("".join(secrets.choice(ALPHABET) for _ in range(LENGTH))) for _ in range(COUNT)
    ]


def normalize(text: str) -> str:
    """The canonical form of a typed code; `NEVER` for text that cannot be a code."""
    compact = text.lower().replace("-", "").replace(" ", "").translate(_READ_AS)
    if len(compact) != LENGTH or any(character not in ALPHABET for character in compact):
        return NEVER
    return compact


def _formatted(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"
