"""FactorKeys: TOTP secrets sealed to their row, recovery codes as keyed digests."""

from __future__ import annotations

import uuid
from dataclasses import replace

from starlette.datastructures import Secret
from tokenrota_server.config import Settings
from tokenrota_server.mfa_crypto import FactorKeys
from tokenrota_server.recovery_codes import NEVER, new_codes, normalize


def test_a_sealed_secret_opens_only_for_its_factor_and_key(settings: Settings) -> None:
    """Moved to another row, or read under another MFA_ENCRYPTION_KEY, it does not open."""
    keys = FactorKeys(settings)
    factor_id = uuid.uuid4()
    sealed = keys.seal(factor_id, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    other_key = FactorKeys(replace(settings, mfa_encryption_key=Secret("k" + "x1y2z3w4" * 5)))

    assert keys.open(factor_id, sealed) == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    assert keys.open(uuid.uuid4(), sealed) is None
    assert other_key.open(factor_id, sealed) is None
    assert keys.open(factor_id, sealed[:-1] + bytes([sealed[-1] ^ 1])) is None


def test_recovery_code_digests_depend_on_the_key(settings: Settings) -> None:
    """A copy of the table alone cannot be searched for the codes: the digest is keyed."""
    code = normalize(new_codes()[0])
    other = FactorKeys(replace(settings, mfa_encryption_key=Secret("k" + "x1y2z3w4" * 5)))

    assert FactorKeys(settings).code_digest(code) != other.code_digest(code)


def test_the_grammar_of_a_typed_recovery_code() -> None:
    """Case, spaces and hyphens are ignored; o, i, l read as 0, 1, 1; anything else is no code."""
    assert normalize("7K3QD-M9X2P") == "7k3qdm9x2p"
    assert normalize(" 7k3qd m9x2p ") == "7k3qdm9x2p"
    assert normalize("o1l0a-bcdef") == "0110abcdef"
    for bad in ("", "7k3qd", "7k3qd-m9x2p0", "7k3qd-m9x2u", "7k3qd_m9x2p", "\uff17k3qd-m9x2p"):
        assert normalize(bad) == NEVER
    assert all(normalize(code) != NEVER for code in new_codes())
