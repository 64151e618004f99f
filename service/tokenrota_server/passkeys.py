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
from tokenrota.dpop import Proof
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

from tokenrota_server.auth import Authenticator, DeviceInfo, TokenPair
from tokenrota_server.config import Settings
from tokenrota_server.db import audit, passkeys, sessions, throttle, users
from tokenrota_server.db.factors import Factor, FactorType
from tokenrota_server.db.passkeys import ChallengePurpose, StoredCredential
from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import EmailUnverified, InvalidPasskey, TooManyAttempts
from tokenrota_server.resources import Target

security_log = logging.getLogger("tokenrota.security")

# Long enough to find and touch an authenticator, short enough that a leaked challenge is dead.
CHALLENGE_TTL = timedelta(minutes=2)
# Authenticator data flags (WebAuthn L2 §6.1): user present, user verified.
FLAG_UP, FLAG_UV = 0x01, 0x04


@dataclass(frozen=True, repr=False)
class CheckedCredential:
    """A creation response that passed every check, not stored yet."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    backup_eligible: bool
    transports: list[str]


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
    """The passkey use cases, with their dependencies passed in explicitly."""

    def __init__(self, settings: Settings, auth: Authenticator) -> None:
        self._settings = settings
        self._auth = auth

    async def login(
        self,
        pool: asyncpg.Pool,
        *,
        credential: object,
        now: datetime,
        device: DeviceInfo,
        remember: bool,
        proof: Proof | None,
        target: Target | None = None,
    ) -> TokenPair:
        """Sign in with a discoverable passkey alone: the authenticator must have verified the
        user; the session starts at aal2 (`amr` hwk or swk, and user). Raise `InvalidPasskey`,
        or `EmailUnverified` under REQUIRE_VERIFIED_EMAIL."""
        used = await self.check_assertion(
            pool, credential=credential, now=now, ip=device.ip, for_user=None
        )
        if self._settings.require_verified_email and not used.user.email_verified:
            raise EmailUnverified()
        return await self._auth.start_session(
            pool,
            used.user,
            now=now,
            device=device,
            remember=remember,
            proof=proof,
            strength=sessions.Strength(amr=used.amr, acr="aal2"),
            target=target,
        )

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

    async def check_registration(
        self, pool: asyncpg.Pool, *, user_id: uuid.UUID, credential: object, now: datetime
    ) -> CheckedCredential:
        """Check a creation response against a challenge issued to `user_id` (spending it);
        raise `InvalidPasskey` for a refused one (malformed, another user's challenge, used or
        expired, another origin or RP id)."""
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
        return CheckedCredential(
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            transports=[str(t.value) for t in parsed.response.transports or ()],
        )

    async def store(
        self,
        connection: Connection,
        *,
        user_id: uuid.UUID,
        checked: CheckedCredential,
        name: str,
        now: datetime,
    ) -> Factor:
        """Store a checked credential as a live factor, in the caller's transaction; raise
        `InvalidPasskey` when its id is registered already (the caller's transaction is then
        to be rolled back)."""
        factor_id = uuid.uuid4()
        await passkeys.insert_factor(
            connection, factor_id=factor_id, user_id=user_id, name=name, now=now
        )
        stored = await passkeys.insert_credential(
            connection,
            factor_id=factor_id,
            user_id=user_id,
            credential_id=checked.credential_id,
            public_key=checked.public_key,
            sign_count=checked.sign_count,
            backup_eligible=checked.backup_eligible,
            transports=checked.transports,
        )
        if not stored:
            raise InvalidPasskey()
        return Factor(factor_id, user_id, FactorType.PASSKEY, name, now, None, now)

    async def authentication_options(
        self, pool: asyncpg.Pool, *, email: str | None, ip: str | None, now: datetime
    ) -> dict[str, Any]:
        """Request options for any discoverable passkey of this site (an empty allowCredentials).

        `email` is accepted and ignored: listing its user's credentials would tell anyone who
        asks whether that email has an account with passkeys. Passkeys are registered as
        discoverable (resident) credentials, so the browser finds them without a list. Raises
        `TooManyAttempts` past PASSKEY_OPTIONS_IP_MAX_ATTEMPTS requests from `ip` per window."""
        del email  # one answer for every email, known or not
        challenge = webauthn.helpers.generate_challenge()
        async with pool.acquire() as connection:
            # Counted before the challenge is written: a refused flood writes no rows.
            retry_after = await throttle.count_passkey_options(
                connection, self._settings, ip=ip, now=now
            )
            if retry_after is not None:
                security_log.warning("passkey options throttled", extra={"ip": ip})
                raise TooManyAttempts(retry_after)
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
            allow_credentials=[],
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
