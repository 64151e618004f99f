"""Use cases: passkeys (WebAuthn Level 2) on py_webauthn: creation and request options,
registering a credential as a factor, and checking an assertion.

Every challenge is 64 random bytes (py_webauthn's), kept as a digest until it is spent once or
CHALLENGE_TTL passes. An assertion is checked in this order: its challenge is spent (a
compare-and-set) and its credential read, in one statement; the origin, RP id, user and user
verification are what this use allows; py_webauthn checks the whole again with the signature;
the counter moves forward (another compare-and-set). A refusal of a known credential is audited
in its own statement, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import asyncpg
import webauthn
from webauthn.helpers import (
    base64url_to_bytes,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tokenrota_server.config import Settings
from tokenrota_server.db import audit, passkeys, users
from tokenrota_server.db.passkeys import ChallengePurpose, StoredCredential
from tokenrota_server.db.pool import Connection
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import InvalidInput, InvalidPasskey, NotFound

security_log = logging.getLogger("tokenrota.security")

# Long enough to find and touch an authenticator, short enough that a leaked challenge is dead.
CHALLENGE_TTL = timedelta(minutes=2)
MAX_NAME_LENGTH = 64
# Authenticator data flags (WebAuthn L2 §6.1): user present, user verified.
FLAG_UP, FLAG_UV = 0x01, 0x04


@dataclass(frozen=True)
class PasskeyFactor:
    """A registered passkey, as GET /mfa/factors shows a factor."""

    id: uuid.UUID
    name: str
    created_at: datetime

    def to_json(self) -> dict[str, str | None]:
        return {
            "id": str(self.id),
            "type": "passkey",
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "last_used_at": None,
        }


@dataclass(frozen=True)
class PasskeyUse:
    """A checked assertion: whose credential (an active user), which factor, and the RFC 8176
    methods it shows (`hwk` for a credential bound to its device, `swk` for a synced one;
    `user` when the authenticator verified the user)."""

    user: users.User
    factor_id: uuid.UUID
    amr: tuple[str, ...]

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id


def user_handle(user_id: uuid.UUID) -> bytes:
    """The WebAuthn user handle: the user's id, 16 opaque bytes, never the email."""
    return user_id.bytes


class Passkeys:
    """The passkey use cases, with the settings passed in."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def registration_options(
        self, pool: asyncpg.Pool, *, user: users.User, now: datetime
    ) -> dict[str, Any]:
        """Creation options for a new passkey of `user` (a discoverable credential), its
        challenge stored for them alone."""
        challenge = webauthn.helpers.generate_challenge()
        async with pool.acquire() as connection:
            existing = await passkeys.credential_descriptors(connection, user.id)
            await passkeys.insert_challenge(
                connection,
                challenge=challenge,
                purpose=ChallengePurpose.REGISTER,
                user_id=user.id,
                expires_at=now + CHALLENGE_TTL,
            )
        options = webauthn.generate_registration_options(
            rp_id=self._settings.webauthn_rp_id,
            rp_name=self._settings.webauthn_rp_name,
            user_name=user.email,
            user_id=user_handle(user.id),
            challenge=challenge,
            timeout=int(CHALLENGE_TTL.total_seconds() * 1000),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=_descriptors(existing),
        )
        return options_to_json_dict(options)

    async def register(
        self,
        pool: asyncpg.Pool,
        *,
        user_id: uuid.UUID,
        credential: object,
        name: str,
        now: datetime,
        ip: str | None,
    ) -> PasskeyFactor:
        """Check a creation response against a challenge issued to `user_id` and store the
        credential as a verified factor; raise `InvalidInput` for a bad name, `InvalidPasskey`
        for a refused response (malformed, origin, RP id, challenge, an id already known)."""
        name = _factor_name(name)
        try:
            parsed = parse_registration_credential_json(_as_json(credential))
        except (WebAuthnException, ValueError, TypeError):
            raise InvalidPasskey() from None
        challenge = _challenge_of(parsed.response.client_data_json)
        async with pool.acquire() as connection:
            spent = await passkeys.spend_challenge(
                connection, challenge=challenge, purpose=ChallengePurpose.REGISTER, now=now
            )
        if spent is None or spent[0] != user_id:
            raise InvalidPasskey()
        try:
            verified = webauthn.verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self._settings.webauthn_rp_id,
                expected_origin=list(self._settings.passkey_origins),
            )
        except WebAuthnException:
            security_log.info("passkey registration refused", extra={"user_id": user_id})
            raise InvalidPasskey() from None
        factor = PasskeyFactor(uuid.uuid4(), name, now)
        transports = [str(t.value) for t in parsed.response.transports or ()]
        async with pool.acquire() as connection, connection.transaction():
            if not await users.lock_user(connection, user_id):
                raise NotFound()
            await passkeys.insert_factor(
                connection, factor_id=factor.id, user_id=user_id, name=name, now=now
            )
            stored = await passkeys.insert_credential(
                connection,
                factor_id=factor.id,
                user_id=user_id,
                credential_id=verified.credential_id,
                public_key=verified.credential_public_key,
                sign_count=verified.sign_count,
                backup_eligible=verified.credential_device_type
                == CredentialDeviceType.MULTI_DEVICE,
                transports=transports,
            )
            if not stored:
                raise InvalidPasskey()
            await audit.record(
                connection,
                audit.AuditAction.PASSKEY_REGISTERED,
                actor=audit.user_actor(user_id),
                now=now,
                user_id=user_id,
                ip=ip,
                details={"factor_id": str(factor.id)},
            )
        security_log.info("passkey registered", extra={"user_id": user_id})
        return factor

    async def authentication_options(
        self, pool: asyncpg.Pool, *, email: str | None, now: datetime
    ) -> dict[str, Any]:
        """Request options: with `email`, the credentials of its user (none for an unknown
        email, as for a discoverable login); without, any discoverable passkey."""
        challenge = webauthn.helpers.generate_challenge()
        async with pool.acquire() as connection:
            allowed: list[tuple[bytes, list[str]]] = []
            if email is not None:
                user_id = await users.find_user_id(connection, normalize_email(email))
                if user_id is not None:
                    allowed = await passkeys.credential_descriptors(connection, user_id)
            await passkeys.insert_challenge(
                connection,
                challenge=challenge,
                purpose=ChallengePurpose.AUTHENTICATE,
                user_id=None,
                expires_at=now + CHALLENGE_TTL,
            )
        options = webauthn.generate_authentication_options(
            rp_id=self._settings.webauthn_rp_id,
            challenge=challenge,
            timeout=int(CHALLENGE_TTL.total_seconds() * 1000),
            allow_credentials=_descriptors(allowed),
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return options_to_json_dict(options)

    async def check_assertion(
        self,
        pool: asyncpg.Pool,
        *,
        credential: object,
        now: datetime,
        ip: str | None,
        for_user: uuid.UUID | None,
    ) -> PasskeyUse:
        """Check an assertion; raise `InvalidPasskey` for any refusal.

        `for_user`: a second factor for that user (their credential, user presence enough);
        None: a passkey alone, which must verify the user.
        """
        try:
            parsed = parse_authentication_credential_json(_as_json(credential))
        except (WebAuthnException, ValueError, TypeError):
            raise InvalidPasskey() from None
        challenge = _challenge_of(parsed.response.client_data_json)
        async with pool.acquire() as connection:
            # One round trip: the challenge is spent even for an unknown credential.
            spent, stored = await passkeys.spend_challenge_and_find(
                connection,
                challenge=challenge,
                purpose=ChallengePurpose.AUTHENTICATE,
                credential_id=parsed.raw_id,
                now=now,
            )
            if stored is None:
                security_log.info("passkey refused: unknown credential", extra={"ip": ip})
                raise InvalidPasskey()
            reason = "challenge" if not spent else self._refusal(parsed, stored, for_user)
            if reason is not None:
                await _refuse(connection, stored, reason, ip, now)
            try:
                verified = webauthn.verify_authentication_response(
                    credential=parsed,
                    expected_challenge=challenge,
                    expected_rp_id=self._settings.webauthn_rp_id,
                    expected_origin=list(self._settings.passkey_origins),
                    credential_public_key=stored.public_key,
                    # The counter is checked below, by a compare-and-set, once the signature is.
                    credential_current_sign_count=0,
                    require_user_verification=for_user is None,
                )
            except WebAuthnException:
                await _refuse(connection, stored, "signature", ip, now)
            if not await passkeys.advance_sign_count(
                connection, factor_id=stored.factor_id, sign_count=verified.new_sign_count, now=now
            ):
                # A counter that does not move forward: a cloned authenticator (§6.1.1).
                await _refuse(connection, stored, "counter", ip, now)
        amr = ["swk" if stored.backup_eligible else "hwk"]
        if verified.user_verified:
            amr.append("user")
        return PasskeyUse(stored.user, stored.factor_id, tuple(amr))

    def _refusal(
        self,
        parsed: AuthenticationCredential,
        stored: StoredCredential,
        for_user: uuid.UUID | None,
    ) -> str | None:
        """Why this assertion may not be used here, checked before its signature (and again
        by py_webauthn): None when origin, RP id, user and verification are right."""
        client_data = _client_data(parsed.response.client_data_json)
        if client_data.get("origin") not in self._settings.passkey_origins:
            return "origin"
        authenticator_data = parsed.response.authenticator_data
        rp_id_hash = hashlib.sha256(self._settings.webauthn_rp_id.encode()).digest()
        if authenticator_data[:32] != rp_id_hash:
            return "rp_id"
        handle = parsed.response.user_handle
        if for_user is not None and stored.user_id != for_user:
            return "other_user"
        if handle is not None and handle != user_handle(stored.user_id):
            return "other_user"
        flags = authenticator_data[32] if len(authenticator_data) > 32 else 0
        if for_user is None and not flags & FLAG_UV:
            return "user_verification"
        return None


async def _refuse(
    connection: Connection, stored: StoredCredential, reason: str, ip: str | None, now: datetime
) -> NoReturn:
    """Audit a refused assertion of a known credential (its own statement: it commits whatever
    follows), then raise `InvalidPasskey`."""
    await audit.record(
        connection,
        audit.AuditAction.PASSKEY_REFUSED,
        actor=audit.SYSTEM_ACTOR,
        now=now,
        user_id=stored.user_id,
        ip=ip,
        details={"factor_id": str(stored.factor_id), "reason": reason},
    )
    security_log.warning(
        "passkey refused", extra={"user_id": stored.user_id, "reason": reason, "ip": ip}
    )
    raise InvalidPasskey()


def _as_json(credential: object) -> str:
    if not isinstance(credential, dict):
        raise TypeError("a credential is a JSON object")
    return json.dumps(credential)


def _client_data(client_data_json: bytes) -> dict[str, Any]:
    try:
        data = json.loads(client_data_json)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _challenge_of(client_data_json: bytes) -> bytes:
    """The challenge the browser signed; empty (matching nothing) when there is none."""
    challenge = _client_data(client_data_json).get("challenge")
    if not isinstance(challenge, str) or len(challenge) > 128:
        return b""
    try:
        return base64url_to_bytes(challenge)
    except ValueError:
        return b""


def _descriptors(found: list[tuple[bytes, list[str]]]) -> list[PublicKeyCredentialDescriptor]:
    known = {t.value for t in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(
            id=credential_id,
            transports=[AuthenticatorTransport(t) for t in transports if t in known] or None,
        )
        for credential_id, transports in found
    ]


def _factor_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidInput(f"'name' must be 1 to {MAX_NAME_LENGTH} printable characters.")
    return name
