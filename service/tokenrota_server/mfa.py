"""Use cases of second factors: managing them, and the second step of a login or a step-up.

Every second-factor step (/login/mfa, /mfa/challenge) runs the same steps whatever the answer
and whatever is wrong with it: count the attempt, read the user's factors, compute every TOTP
candidate and the recovery code's digest and compare them all, run one compare-and-set
statement (with nothing to set when nothing matched), and write one audit event. So a wrong,
malformed, replayed or drifted code and a wrong or used recovery code get one answer, in about
the same time (docs/benchmarks.md, "Second factors").
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from tokenrota.dpop import Proof

from tokenrota_server import recovery_codes, session_policy, telemetry, totp
from tokenrota_server.auth import Authenticator, DeviceInfo, SessionUser, TokenPair, stored_token
from tokenrota_server.config import Settings
from tokenrota_server.db import audit, factors, mfa_tokens, sessions, throttle
from tokenrota_server.db.factors import Factor, SecondFactorState
from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import (
    InsufficientUserAuthentication,
    InvalidCode,
    InvalidInput,
    InvalidMfaToken,
    InvalidPasskey,
    InvalidToken,
    MalformedRequest,
    NotFound,
    TooManyAttempts,
)
from tokenrota_server.mfa_crypto import FactorKeys
from tokenrota_server.outcomes import Grant
from tokenrota_server.passkeys import Passkeys
from tokenrota_server.resources import Target
from tokenrota_server.tokens import TokenCodec, token_digest

security_log = logging.getLogger("tokenrota.security")

# RFC 8176 methods in the order tokens list them; "mfa" once two kinds were used.
AMR_ORDER = ("pwd", "otp", "hwk", "swk", "mfa")
DEFAULT_TOTP_NAME = "Authenticator"
DEFAULT_PASSKEY_NAME = "Passkey"
MAX_MFA_TOKEN_LENGTH = 128
# A sealed secret that no longer opens (a changed key) is checked as this, so the step costs
# the same; its result is ignored.
_UNOPENED = "A" * 32


@dataclass(frozen=True, repr=False)
class Code:
    """A TOTP code, as typed."""

    text: str


@dataclass(frozen=True, repr=False)
class RecoveryCode:
    """A recovery code, as typed."""

    text: str


@dataclass(frozen=True, repr=False)
class PasskeyAssertion:
    """A passkey's assertion (the browser's PublicKeyCredential as JSON)."""

    credential: dict[str, Any]


# What a second-factor step is answered with.
SecondFactor = Code | RecoveryCode | PasskeyAssertion


def second_factor_of(body: dict[str, Any]) -> SecondFactor:
    """The one second factor in `body` (its other fields already taken out): `code`,
    `recovery_code` or `credential`; raise `MalformedRequest` for any other field,
    `InvalidInput` for none, two, a code that is not a short string, or a credential that is
    not an object."""
    readers: dict[str, type[Code] | type[RecoveryCode]] = {
        "code": Code,
        "recovery_code": RecoveryCode,
    }
    unknown = sorted(set(body) - set(readers) - {"credential"})
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 40 and unknown[0].isprintable() else "a field"
        raise MalformedRequest(f"Unexpected field '{shown}'.")
    if len(body) != 1:
        raise InvalidInput("Give exactly one of 'code', 'recovery_code' or 'credential'.")
    [(name, value)] = body.items()
    if name == "credential":
        if not isinstance(value, dict):
            raise InvalidInput("'credential' must be a WebAuthn credential object.")
        return PasskeyAssertion(value)
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"'{name}' must be a string of at most 64 characters.")
    return readers[name](value)


@dataclass(frozen=True, repr=False)
class TotpEnrolment:
    """A TOTP factor just enrolled: what the user's app needs, shown this once."""

    factor: Factor
    secret: str
    otpauth_uri: str
    qr_svg: str

    def to_json(self) -> dict[str, str]:
        return {
            "factor_id": str(self.factor.id),
            "secret": self.secret,
            "otpauth_uri": self.otpauth_uri,
            "qr_svg": self.qr_svg,
        }


@dataclass(frozen=True)
class _Match:
    """What a second factor matched, if anything: a TOTP factor's step or a recovery code."""

    factor_id: uuid.UUID | None = None
    step: int | None = None
    code_digest: bytes | None = field(default=None, repr=False)


def strength_with(amr: tuple[str, ...], *used: str) -> sessions.Strength:
    """The strength of a login that used the methods `amr` and then those `used` by a second
    factor: aal2, with "mfa" once two kinds are in it (RFC 8176)."""
    methods = (set(amr) - {"mfa"}) | set(used)
    if len(methods) >= 2:
        methods.add("mfa")
    return sessions.Strength(
        amr=tuple(name for name in AMR_ORDER if name in methods)
        + tuple(sorted(methods - set(AMR_ORDER))),
        acr="aal2",
    )


class SecondFactors:
    """The second-factor use cases, with their dependencies passed in explicitly."""

    def __init__(
        self,
        settings: Settings,
        auth: Authenticator,
        codec: TokenCodec,
        keys: FactorKeys,
        passkeys: Passkeys,
    ) -> None:
        self._settings = settings
        self._auth = auth
        self._codec = codec
        self._keys = keys
        self._passkeys = passkeys

    # -- managing factors ------------------------------------------------------------------

    async def list_factors(
        self, pool: asyncpg.Pool, *, access_token: str, now: datetime
    ) -> list[Factor]:
        """The caller's live factors (any bearer of a live session)."""
        who = await self._auth.authenticate(pool, access_token=access_token, now=now)
        async with pool.acquire() as connection:
            return await factors.list_live_factors(connection, who.user.id)

    async def enroll_totp(
        self, pool: asyncpg.Pool, *, access_token: str, name: str | None, now: datetime
    ) -> TotpEnrolment:
        """Start a TOTP factor (not live until `verify_totp`); raise
        `InsufficientUserAuthentication` unless the login is recent (and aal2 once a factor
        exists), `InvalidInput` for a bad name."""
        label = _factor_name(name)
        who = await self._manager(pool, access_token, now)
        secret = totp.new_secret()
        factor_id = uuid.uuid4()
        async with pool.acquire() as connection, connection.transaction():
            factor = await factors.insert_totp(
                connection,
                factor_id=factor_id,
                user_id=who.user.id,
                name=label,
                sealed_secret=self._keys.seal(factor_id, secret),
                now=now,
            )
        issuer = urlsplit(self._settings.token_issuer).hostname or self._settings.token_issuer
        uri = totp.otpauth_uri(secret, account=who.user.email, issuer=issuer)
        return TotpEnrolment(factor=factor, secret=secret, otpauth_uri=uri, qr_svg=totp.qr_svg(uri))

    async def verify_totp(
        self,
        pool: asyncpg.Pool,
        *,
        access_token: str,
        factor_id: uuid.UUID,
        code: str,
        now: datetime,
    ) -> tuple[Factor, list[str] | None]:
        """Make a pending TOTP factor live with its first code; with the user's first factor,
        a fresh set of recovery codes. Raise `NotFound`, `InvalidCode`, `TooManyAttempts`."""
        who = await self._manager(pool, access_token, now)
        user_id = who.user.id
        async with pool.acquire() as connection:
            await self._count(connection, user_id, None, now, via="enrol")
            pending = await factors.find_pending_totp(
                connection, user_id=user_id, factor_id=factor_id
            )
            if pending is None:
                raise NotFound()
            secret = self._keys.open(pending.factor_id, pending.sealed_secret)
            step = totp.matching_step(secret, code, now) if secret is not None else None
            if step is None:
                await self._record(connection, audit.AuditAction.MFA_FAILED, user_id, now, "enrol")
                raise InvalidCode()
            codes = None
            async with connection.transaction():
                first = not await factors.has_live_factor(connection, user_id)
                factor = await factors.mark_verified(
                    connection, user_id=user_id, factor_id=factor_id, step=step, now=now
                )
                if factor is None:
                    raise NotFound()
                if first:
                    codes = await self._replace_codes(connection, user_id, now)
                await throttle.forgive_second_factor(connection, user_id)
                await _record_enrolled(connection, factor, now)
        security_log.info("second factor enrolled", extra={"user_id": user_id})
        return factor, codes

    async def passkey_options(
        self, pool: asyncpg.Pool, *, access_token: str, now: datetime
    ) -> dict[str, Any]:
        """Creation options for a new passkey; the caller may manage factors (see `_manager`)."""
        who = await self._manager(pool, access_token, now)
        return await self._passkeys.registration_options(pool, user=who.user, now=now)

    async def register_passkey(
        self,
        pool: asyncpg.Pool,
        *,
        access_token: str,
        credential: object,
        name: str | None,
        now: datetime,
    ) -> tuple[Factor, list[str] | None]:
        """Register a passkey as a live factor (its creation response proved it); with the
        user's first factor, a fresh set of recovery codes. Raise `InvalidInput` for a bad
        name, `InsufficientUserAuthentication`, `InvalidPasskey`."""
        label = _factor_name(name, DEFAULT_PASSKEY_NAME)
        who = await self._manager(pool, access_token, now)
        user_id = who.user.id
        checked = await self._passkeys.check_registration(
            pool, user_id=user_id, credential=credential, now=now
        )
        async with pool.acquire() as connection, connection.transaction():
            first = not await factors.has_live_factor(connection, user_id)
            factor = await self._passkeys.store(
                connection, user_id=user_id, checked=checked, name=label, now=now
            )
            codes = await self._replace_codes(connection, user_id, now) if first else None
            await _record_enrolled(connection, factor, now)
        security_log.info("passkey registered", extra={"user_id": user_id})
        return factor, codes

    async def new_recovery_codes(
        self, pool: asyncpg.Pool, *, access_token: str, now: datetime
    ) -> list[str]:
        """A fresh set of recovery codes; every older one dies. Needs a live factor."""
        who = await self._manager(pool, access_token, now)
        async with pool.acquire() as connection, connection.transaction():
            if not await factors.has_live_factor(connection, who.user.id):
                raise InvalidInput("Recovery codes come with a second factor: enrol one first.")
            return await self._replace_codes(connection, who.user.id, now)

    async def remove_factor(
        self, pool: asyncpg.Pool, *, access_token: str, factor_id: uuid.UUID, now: datetime
    ) -> None:
        """Remove one of the caller's factors; raise `NotFound` for one not theirs."""
        who = await self._manager(pool, access_token, now)
        await self._remove(pool, who.user.id, factor_id, audit.user_actor(who.user.id), now)

    async def _remove(
        self,
        pool: asyncpg.Pool,
        user_id: uuid.UUID,
        factor_id: uuid.UUID,
        actor: str,
        now: datetime,
    ) -> None:
        async with pool.acquire() as connection, connection.transaction():
            kind = await factors.delete_factor(connection, user_id=user_id, factor_id=factor_id)
            if kind is None:
                raise NotFound()
            last = not await factors.has_live_factor(connection, user_id)
            await audit.record(
                connection,
                audit.AuditAction.MFA_FACTOR_REMOVED,
                actor=actor,
                now=now,
                user_id=user_id,
                details={"factor_id": str(factor_id), "type": kind.value, "last": last},
            )
        security_log.info("second factor removed", extra={"user_id": user_id})

    async def _manager(self, pool: asyncpg.Pool, access_token: str, now: datetime) -> SessionUser:
        """The caller, if their login may manage factors: `auth_time` within
        MFA_MANAGE_MAX_AGE and, once they have a live factor, `acr` aal2."""
        who = await self._auth.authenticate(pool, access_token=access_token, now=now)
        async with pool.acquire() as connection:
            has_factor = await factors.has_live_factor(connection, who.user.id)
        max_age = self._settings.mfa_manage_max_age
        auth_time = who.claims.auth_time
        recent = auth_time is not None and int(now.timestamp()) - auth_time <= max_age
        strong = not has_factor or who.claims.acr == "aal2"
        if not (recent and strong):
            raise InsufficientUserAuthentication(
                acr_values="aal2" if has_factor else "aal1", max_age=max_age
            )
        return who

    async def _replace_codes(
        self, connection: Connection, user_id: uuid.UUID, now: datetime
    ) -> list[str]:
        codes = recovery_codes.new_codes()
        await factors.replace_recovery_codes(
            connection,
            user_id=user_id,
            digests=[self._keys.code_digest(recovery_codes.normalize(code)) for code in codes],
            now=now,
        )
        await audit.record(
            connection,
            audit.AuditAction.MFA_RECOVERY_CODES_ISSUED,
            actor=audit.user_actor(user_id),
            now=now,
            user_id=user_id,
        )
        return codes

    # -- the second step -------------------------------------------------------------------

    async def complete_login(
        self,
        pool: asyncpg.Pool,
        *,
        mfa_token: str,
        answer: SecondFactor,
        now: datetime,
        device: DeviceInfo,
        proof: Proof | None = None,
        target: Target | None = None,
    ) -> TokenPair:
        """Finish a login that /login answered with `mfa_required`: start a session at aal2,
        its access token for `target` (a resolved `resource`) when given.

        Raises `InvalidMfaToken` (unknown, spent, expired, user disabled), `TooManyAttempts`
        (per user and per mfa_token), `InvalidCode`. The token is spent with the code, once.
        """
        if len(mfa_token) > MAX_MFA_TOKEN_LENGTH or not mfa_token.isascii():
            raise InvalidMfaToken()
        digest = token_digest(mfa_token)
        async with pool.acquire() as connection:
            pending = await mfa_tokens.find_live(connection, token_digest=digest, now=now)
        if pending is None:
            raise InvalidMfaToken()
        user = pending.user
        telemetry.annotate(user_id=user.id)
        used = await self._second_step(pool, user.id, answer, now, token=digest, via="login")
        return await self._auth.start_session(
            pool,
            user,
            now=now,
            device=device,
            remember=pending.remember,
            proof=proof,
            strength=strength_with(("pwd",), *used),
            target=target,
        )

    async def step_up(
        self, pool: asyncpg.Pool, *, access_token: str, answer: SecondFactor, now: datetime
    ) -> TokenPair:
        """Raise the bearer's session to aal2 with a second factor, and answer a new pair for
        it (the session's other refresh tokens live on, and now mint aal2 tokens too)."""
        who = await self._auth.authenticate(pool, access_token=access_token, now=now)
        user_id, session_id = who.user.id, who.session_id
        used = await self._second_step(pool, user_id, answer, now, token=None, via="step_up")
        claims = self._codec.new_refresh_claims(
            subject=str(user_id),
            session_id=str(session_id),
            now=now,
            jkt=who.claims.confirmation_jkt,
        )
        refresh_token = self._codec.mint_refresh(claims)
        async with pool.acquire() as connection:
            live = await sessions.raise_assurance(
                connection,
                session_id=session_id,
                user_id=user_id,
                strength=strength_with(who.claims.amr or ("pwd",), *used),
                now=now,
                token=stored_token(refresh_token, claims),
                idle_since=session_policy.idle_since(self._settings, now),
            )
        if live is None:
            raise InvalidToken()
        telemetry.record(issued=Grant.STEP_UP)
        return self._auth.pair(live, session_id, refresh_token, claims, now)

    async def _second_step(
        self,
        pool: asyncpg.Pool,
        user_id: uuid.UUID,
        answer: SecondFactor,
        now: datetime,
        *,
        token: bytes | None,
        via: str,
    ) -> tuple[str, ...]:
        """Check `answer` for the user and spend what it matched (with `token`, the mfa
        token too); the RFC 8176 methods it showed. Raise `TooManyAttempts` or `InvalidCode`
        (`InvalidPasskey` for an assertion). The same steps for every kind of wrong code: see
        the module's docstring."""
        if isinstance(answer, PasskeyAssertion):
            return await self._passkey_step(pool, user_id, answer, now, token=token, via=via)
        async with pool.acquire() as connection:
            await self._count(connection, user_id, token, now, via=via)
            state = await factors.second_factor_state(connection, user_id)
            match = self._match(state, answer, now)
            token_spent = True
            async with connection.transaction():
                accepted = await factors.spend(
                    connection,
                    user_id=user_id,
                    factor_id=match.factor_id,
                    step=match.step,
                    code_digest=match.code_digest,
                    now=now,
                )
                if accepted and token is not None:
                    token_spent = await mfa_tokens.spend(connection, token_digest=token, now=now)
                if accepted and token_spent:
                    await throttle.forgive_second_factor(connection, user_id)
                await self._record(
                    connection,
                    audit.AuditAction.MFA_SUCCEEDED if accepted else audit.AuditAction.MFA_FAILED,
                    user_id,
                    now,
                    via,
                )
                if not token_spent:
                    # Spent by a concurrent request meanwhile: keep the code unspent.
                    raise _Rollback()
        if not accepted:
            security_log.info("second factor refused", extra={"user_id": user_id})
            raise InvalidCode()
        return ("otp",)

    async def _passkey_step(
        self,
        pool: asyncpg.Pool,
        user_id: uuid.UUID,
        answer: PasskeyAssertion,
        now: datetime,
        *,
        token: bytes | None,
        via: str,
    ) -> tuple[str, ...]:
        """A passkey as the second factor: counted like a code, then an assertion of one of
        this user's own credentials (`Passkeys.check_assertion` spends its challenge, audits a
        refusal with its reason, and moves the counter); the mfa token spent after it."""
        async with pool.acquire() as connection:
            await self._count(connection, user_id, token, now, via=via)
        try:
            used = await self._passkeys.check_assertion(
                pool, credential=answer.credential, now=now, ip=None, for_user=user_id
            )
        except InvalidPasskey:
            async with pool.acquire() as connection:
                await self._record(connection, audit.AuditAction.MFA_FAILED, user_id, now, via)
            raise
        async with pool.acquire() as connection, connection.transaction():
            if token is not None and not await mfa_tokens.spend(
                connection, token_digest=token, now=now
            ):
                raise InvalidMfaToken()  # spent by a concurrent request meanwhile
            await throttle.forgive_second_factor(connection, user_id)
            await self._record(connection, audit.AuditAction.MFA_SUCCEEDED, user_id, now, via)
        return used.amr

    def _match(self, state: SecondFactorState, answer: SecondFactor, now: datetime) -> _Match:
        """What `answer` matches among the user's factors. Computes every TOTP candidate of
        every factor and the recovery code's digest, and compares all of them, whatever the
        answer's kind and whatever is wrong with it."""
        code = answer.text if isinstance(answer, Code) else ""
        typed = answer.text if isinstance(answer, RecoveryCode) else ""
        found = _Match()
        for factor in state.totp:
            secret = self._keys.open(factor.factor_id, factor.sealed_secret)
            step = totp.matching_step(secret if secret is not None else _UNOPENED, code, now)
            if step is not None and secret is not None and found.factor_id is None:
                found = _Match(factor_id=factor.factor_id, step=step)
        digest = self._keys.code_digest(recovery_codes.normalize(typed))
        for stored in state.recovery_digests:
            if secrets.compare_digest(stored, digest) and found.factor_id is None:
                found = _Match(code_digest=stored)
        return found

    async def _count(
        self,
        connection: Connection,
        user_id: uuid.UUID,
        token: bytes | None,
        now: datetime,
        *,
        via: str,
    ) -> None:
        retry_after = await throttle.count_second_factor(
            connection, self._settings, user_id=user_id, token_digest=token, now=now
        )
        if retry_after is not None:
            await self._record(connection, audit.AuditAction.MFA_THROTTLED, user_id, now, via)
            security_log.warning("second factor throttled", extra={"user_id": user_id})
            raise TooManyAttempts(retry_after)

    async def _record(
        self,
        connection: Connection,
        action: audit.AuditAction,
        user_id: uuid.UUID,
        now: datetime,
        via: str,
    ) -> None:
        await audit.record(
            connection,
            action,
            actor=audit.user_actor(user_id),
            now=now,
            user_id=user_id,
            details={"via": via},
        )


class _Rollback(InvalidMfaToken):
    """Raised inside the second step's transaction to undo it: the mfa token was spent by a
    concurrent request between the code's check and its own spending."""


def _factor_name(name: str | None, default: str = DEFAULT_TOTP_NAME) -> str:
    if name is None:
        return default
    if not (1 <= len(name) <= factors.MAX_NAME_LENGTH) or not name.isprintable():
        raise InvalidInput(f"'name' is 1 to {factors.MAX_NAME_LENGTH} printable characters.")
    return name


async def _record_enrolled(connection: Connection, factor: Factor, now: datetime) -> None:
    await audit.record(
        connection,
        audit.AuditAction.MFA_FACTOR_ENROLLED,
        actor=audit.user_actor(factor.user_id),
        now=now,
        user_id=factor.user_id,
        details={"factor_id": str(factor.id), "type": factor.type.value},
    )
