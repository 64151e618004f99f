"""Settings: read once from the environment, validated, frozen, then passed in.

Nothing else in the service reads `os.environ`. Secrets are kept as starlette `Secret`s so that a
repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Secret

from tokenrota_server.errors import ConfigError

# RFC 8725 §3.5: an HMAC key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
# A random secret of 32+ characters, even hex, shows nearly all its alphabet; "a" * 32 or
# "password" * 4 pass the length check with fewer than this many distinct characters.
MIN_DISTINCT_SECRET_CHARACTERS = 8
ENVIRONMENTS = ("development", "test", "production")
# The schemes asyncpg (and so the service and its migrations) can connect with.
DATABASE_URL_SCHEMES = ("postgresql", "postgres")
# DATABASE_POOLER: what stands between the service and Postgres (see the field).
DATABASE_POOLERS = ("none", "transaction")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# How `load_settings` turns a variable's text into a field's value: (variable name, text) -> value.
Parser = Callable[[str, str], Any]


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None


# SECONDS: whole or decimal (0.5), never an exponent, a sign, nan or inf.
_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


def _seconds(name: str, raw: str) -> float:
    if not _SECONDS.fullmatch(raw.strip()):
        raise ConfigError(f"{name} must be a number of seconds, such as 5 or 0.5")
    return float(raw)


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _text(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _secret(name: str, raw: str) -> Secret:
    return Secret(raw)


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _networks(name: str, raw: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _list(name, raw))
    except ValueError:
        raise ConfigError(
            f"{name} must be a comma-separated list of addresses or networks"
        ) from None


def _pem_file(name: str, raw: str) -> Secret | None:
    """The contents of the PEM file at path `raw` (named by variable `name`); None when blank."""
    path = raw.strip()
    if not path:
        return None
    try:
        return Secret(Path(path).read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        # The path, not the contents: a key must never reach an error message.
        raise ConfigError(f"{name}: cannot read the key file {path}") from None


def _pem_files(name: str, raw: str) -> tuple[str, ...]:
    return tuple(str(_pem_file(name, path)) for path in _list(name, raw))


def _read_by(parse: Parser) -> dict[str, Parser]:
    """Field metadata: `load_settings` reads the field's variable (its name in capitals) so."""
    return {"parse": parse}


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, each read from the variable of its name in capitals.

    A field's default here is its only default: `load_settings` leaves a field that has no
    variable (or an empty one) to it.
    """

    access_token_secret: Secret = field(repr=False, metadata=_read_by(_secret))
    refresh_token_secret: Secret = field(repr=False, metadata=_read_by(_secret))
    env: str = field(default="development", metadata=_read_by(_text))
    database_url: str | None = field(default=None, repr=False, metadata=_read_by(_text))
    host: str = field(default="127.0.0.1", metadata=_read_by(_text))
    port: int = field(default=8000, metadata=_read_by(_integer))
    data_dir: Path = field(default=Path(".data"), metadata=_read_by(_path))
    access_token_ttl: int = field(default=15 * 60, metadata=_read_by(_integer))
    refresh_token_ttl: int = field(default=7 * 24 * 3600, metadata=_read_by(_integer))
    session_max_age: int = field(default=30 * 24 * 3600, metadata=_read_by(_integer))
    refresh_reuse_interval: int = field(default=10, metadata=_read_by(_integer))
    rotate_refresh_tokens: bool = field(default=True, metadata=_read_by(_boolean))
    token_issuer: str = field(default="token-service", metadata=_read_by(_text))
    token_audience: str = field(default="token-service", metadata=_read_by(_text))
    jwt_leeway: int = field(default=30, metadata=_read_by(_integer))
    argon2_time_cost: int = field(default=3, metadata=_read_by(_integer))
    argon2_memory_cost: int = field(default=65536, metadata=_read_by(_integer))
    argon2_parallelism: int = field(default=4, metadata=_read_by(_integer))
    max_body_bytes: int = field(default=64 * 1024, metadata=_read_by(_integer))
    db_pool_min_size: int = field(default=2, metadata=_read_by(_integer))
    db_pool_max_size: int = field(default=10, metadata=_read_by(_integer))
    # Seconds to wait for a new database connection (each host's, in a multi-host URL): a
    # database that does not answer costs a request a quick 503 and a command one line, not
    # asyncpg's default minute.
    database_connect_timeout: float = field(default=5, metadata=_read_by(_seconds))
    # The private key that signs access tokens (ES256 or RS256), read from the PEM file the
    # variable names; None: HS256.
    access_token_signing_key: Secret | None = field(
        default=None, repr=False, metadata=_read_by(_pem_file)
    )
    # PEM texts of earlier signing keys, still published and accepted (the variable lists their
    # files, comma-separated; see the operations guide on rotation).
    access_token_previous_keys: tuple[str, ...] = field(
        default=(), repr=False, metadata=_read_by(_pem_files)
    )
    # Login throttle: attempts per email and per remote address within one window (seconds).
    login_email_max_attempts: int = field(default=10, metadata=_read_by(_integer))
    login_ip_max_attempts: int = field(default=100, metadata=_read_by(_integer))
    login_throttle_window: int = field(default=15 * 60, metadata=_read_by(_integer))
    trusted_proxies: tuple[Network, ...] = field(default=(), metadata=_read_by(_networks))
    # Expired rows are purged every PURGE_INTERVAL seconds (0: never, by the server).
    purge_interval: float = field(default=3600, metadata=_read_by(_seconds))
    purge_batch_size: int = field(default=1000, metadata=_read_by(_integer))
    # Browser frontends: origins allowed to use the refresh cookie (and CORS with credentials).
    # Unset in development: the service's own local address (see `load_settings`).
    allowed_origins: tuple[str, ...] = field(default=(), metadata=_read_by(_list))
    cookie_secure: bool = field(default=True, metadata=_read_by(_boolean))
    # GET /docs (Swagger UI); None means on, except in production.
    docs_enabled: bool | None = field(default=None, metadata=_read_by(_boolean))
    # The base URL clients reach the service at, for the RFC 8414 metadata's endpoints when
    # TOKEN_ISSUER is not a URL (development and test only: production requires a URL issuer).
    public_url: str | None = field(default=None, metadata=_read_by(_text))
    # Registrations per remote address within one LOGIN_THROTTLE_WINDOW: each costs an argon2
    # hash, and a person creates one account; 10 still lets a shared (NAT) address sign up a few.
    register_ip_max_attempts: int = field(default=10, metadata=_read_by(_integer))
    # Passkey request options per remote address within one LOGIN_THROTTLE_WINDOW: each writes a
    # challenge row, unauthenticated; a sign-in asks once, so 60 leaves room for a shared address.
    passkey_options_ip_max_attempts: int = field(default=60, metadata=_read_by(_integer))
    # Below the app (tokenrota_server.http.limits): a request line + headers larger than this
    # get 431, a head not complete in HEADER_READ_TIMEOUT seconds a closed connection, a body
    # not complete in BODY_READ_TIMEOUT seconds 408.
    max_header_bytes: int = field(default=16 * 1024, metadata=_read_by(_integer))
    header_read_timeout: float = field(default=10, metadata=_read_by(_seconds))
    body_read_timeout: float = field(default=30, metadata=_read_by(_seconds))
    # Password reset and email verification (tokenrota_server.recovery): token lifetimes in
    # seconds, and the pages the links in the messages open (`?token=` or `&token=` appended).
    # Unset: the service's own /demo page (development; production must name its pages).
    password_reset_ttl: int = field(default=30 * 60, metadata=_read_by(_integer))
    password_reset_url: str | None = field(default=None, metadata=_read_by(_text))
    email_verification_ttl: int = field(default=24 * 3600, metadata=_read_by(_integer))
    email_verification_url: str | None = field(default=None, metadata=_read_by(_text))
    # Keys of users' app_metadata that become access-token claims (comma-separated); a
    # registered claim (sub, aud, scope, ...: metadata.REGISTERED_CLAIMS) is refused.
    token_claims_from_app_metadata: tuple[str, ...] = field(default=(), metadata=_read_by(_list))
    # An operator's invitation (POST /admin/users with invite): its set-password link's
    # lifetime (seconds) and page; unset, the reset page (the link is spent at /password/reset).
    invitation_ttl: int = field(default=72 * 3600, metadata=_read_by(_integer))
    invitation_url: str | None = field(default=None, metadata=_read_by(_text))
    # /password/forgot per email (known or not) and per address, per LOGIN_THROTTLE_WINDOW.
    password_forgot_email_max_attempts: int = field(default=3, metadata=_read_by(_integer))
    password_forgot_ip_max_attempts: int = field(default=20, metadata=_read_by(_integer))
    # /login of a user whose email is not verified: 403 email_unverified (after the password).
    require_verified_email: bool = field(default=False, metadata=_read_by(_boolean))
    # Outgoing mail: smtp://user:pass@host:587 (STARTTLS, required before credentials) or
    # smtps://user:pass@host:465 (implicit TLS). Unset outside production: .eml files under
    # DATA_DIR/mail/. SMTP_CA_FILE: a CA bundle to verify the server with instead of the system's.
    smtp_url: Secret | None = field(default=None, repr=False, metadata=_read_by(_secret))
    smtp_ca_file: Path | None = field(default=None, metadata=_read_by(_path))
    mail_from: str = field(default="tokenrota <no-reply@localhost>", metadata=_read_by(_text))
    # How often (seconds) the outbox is looked at for mail due, besides being woken by a request
    # of this instance; 0: this instance sends no mail (another one does).
    mail_poll_interval: int = field(default=5, metadata=_read_by(_integer))
    # Seconds the purge keeps an audit event (tokenrota_server.db.audit); older ones are deleted.
    audit_retention: int = field(default=365 * 24 * 3600, metadata=_read_by(_integer))
    # Revocation feed (GET /oauth/revocations): how often a waiting long poll re-reads the feed
    # when no NOTIFY came (lost behind PgBouncer), and whether this process LISTENs at all.
    revocation_poll_interval: float = field(default=1, metadata=_read_by(_seconds))
    revocation_listen: bool = field(default=True, metadata=_read_by(_boolean))
    # Session policy: seconds without a refresh after which a session ends (0: never), live
    # sessions per user before login evicts the least recently used (0: no cap), and the
    # lifetime of a session started with `remember: false`.
    session_idle_timeout: int = field(default=0, metadata=_read_by(_integer))
    max_sessions_per_user: int = field(default=0, metadata=_read_by(_integer))
    session_short_max_age: int = field(default=12 * 3600, metadata=_read_by(_integer))
    # What DATABASE_URL reaches: "none" (Postgres itself, or a session-mode pooler) or
    # "transaction" (PgBouncer in transaction pooling mode: no prepared statement may outlive
    # its transaction, so asyncpg's statement cache is off).
    database_pooler: str = field(default="none", metadata=_read_by(_text))
    # Where migrations (and whatever needs a server session of its own) connect: behind a
    # transaction pooler, Postgres itself. None: DATABASE_URL.
    database_direct_url: str | None = field(default=None, repr=False, metadata=_read_by(_text))
    # Threads that run argon2; 0: one per core, at least 2 (set it where os.cpu_count() sees
    # more cores than a container may use). New secrets (registration, password change and
    # reset, client secrets) may hold at most half of them: a registration flood leaves the
    # rest to logins (tokenrota_server.passwords).
    argon2_threads: int = field(default=0, metadata=_read_by(_integer))
    # Password checks (logins, client authentications, a current password) that may wait for
    # an argon2 thread; one more is refused at once: 503 `unavailable` with Retry-After.
    argon2_max_queued_checks: int = field(default=32, metadata=_read_by(_integer))
    # New secrets (registrations, password changes and resets, client secrets) that may wait
    # for their share of the argon2 threads; one more is refused at once, like a check. Half
    # the checks' bound: the share is half the threads, so 16 waiting hashes wait about as
    # long as 32 waiting checks.
    argon2_max_queued_hashes: int = field(default=16, metadata=_read_by(_integer))
    # DPoP (RFC 9449): proofs must carry a server nonce (§8), handed out with `use_dpop_nonce`
    # and derived from ACCESS_TOKEN_SECRET and the clock, so every instance accepts the others'.
    dpop_nonce: bool = field(default=False, metadata=_read_by(_boolean))
    # /login (and so every browser or app session) needs a DPoP proof: no unbound sessions.
    dpop_required_for_sessions: bool = field(default=False, metadata=_read_by(_boolean))
    # Passkeys (WebAuthn): the relying party's id, a registrable domain that the origins'
    # hosts are (or end in), and the origins whose pages may use them. WEBAUTHN_ORIGINS unset:
    # the ALLOWED_ORIGINS under that domain (in development, the service's own local pages).
    webauthn_rp_id: str = field(default="localhost", metadata=_read_by(_text))
    webauthn_origins: tuple[str, ...] = field(default=(), metadata=_read_by(_list))
    webauthn_rp_name: str = field(default="tokenrota", metadata=_read_by(_text))
    # Second factors (tokenrota_server.mfa). TOTP secrets are encrypted at rest under a key
    # derived from MFA_ENCRYPTION_KEY (required in production; outside it, unset derives one
    # from REFRESH_TOKEN_SECRET). Managing factors needs a login at most MFA_MANAGE_MAX_AGE
    # seconds old; an mfa_token lives MFA_TOKEN_TTL seconds; wrong codes are counted per user
    # and per mfa_token within LOGIN_THROTTLE_WINDOW.
    mfa_encryption_key: Secret | None = field(default=None, repr=False, metadata=_read_by(_secret))
    mfa_manage_max_age: int = field(default=300, metadata=_read_by(_integer))
    mfa_token_ttl: int = field(default=300, metadata=_read_by(_integer))
    mfa_user_max_attempts: int = field(default=10, metadata=_read_by(_integer))
    mfa_token_max_attempts: int = field(default=5, metadata=_read_by(_integer))
    # The admin API's own audience, for a person's (an operator's) tokens: a built-in resource
    # whose only scope is `admin`. Unset: the public base URL + "/admin". Such a token's login
    # must be at most ADMIN_MAX_AUTH_AGE seconds old.
    admin_audience: str | None = field(default=None, metadata=_read_by(_text))
    admin_max_auth_age: int = field(default=12 * 3600, metadata=_read_by(_integer))

    def __post_init__(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"ENV must be one of {', '.join(ENVIRONMENTS)}")
        if self.database_url is not None:
            _check_database_url("DATABASE_URL", self.database_url)
        access, refresh = str(self.access_token_secret), str(self.refresh_token_secret)
        for name, value in (("ACCESS_TOKEN_SECRET", access), ("REFRESH_TOKEN_SECRET", refresh)):
            if len(value.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes")
            if len(set(value)) < MIN_DISTINCT_SECRET_CHARACTERS:
                raise ConfigError(f"{name} must be a random value, not a repeated pattern")
        if secrets.compare_digest(access.encode(), refresh.encode()):
            raise ConfigError("ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET must differ")
        self._check_mfa_key()
        for name, number in (
            ("ACCESS_TOKEN_TTL", self.access_token_ttl),
            ("REFRESH_TOKEN_TTL", self.refresh_token_ttl),
            ("SESSION_MAX_AGE", self.session_max_age),
        ):
            if number <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.refresh_reuse_interval < 0 or self.jwt_leeway < 0:
            raise ConfigError("REFRESH_REUSE_INTERVAL and JWT_LEEWAY cannot be negative")
        if self.db_pool_min_size < 1 or self.db_pool_max_size < self.db_pool_min_size:
            raise ConfigError("DB_POOL_MAX_SIZE must be at least DB_POOL_MIN_SIZE, which is >= 1")
        if self.access_token_previous_keys and self.access_token_signing_key is None:
            raise ConfigError("ACCESS_TOKEN_PREVIOUS_KEYS needs ACCESS_TOKEN_SIGNING_KEY")
        if self.access_token_signing_key is not None:
            # Imported here: only an asymmetric setup needs the key machinery at all.
            from tokenrota.keys import load_key_ring

            load_key_ring(str(self.access_token_signing_key), self.access_token_previous_keys)
        for name, number in (
            ("LOGIN_EMAIL_MAX_ATTEMPTS", self.login_email_max_attempts),
            ("LOGIN_IP_MAX_ATTEMPTS", self.login_ip_max_attempts),
            ("LOGIN_THROTTLE_WINDOW", self.login_throttle_window),
            ("REGISTER_IP_MAX_ATTEMPTS", self.register_ip_max_attempts),
            ("PASSKEY_OPTIONS_IP_MAX_ATTEMPTS", self.passkey_options_ip_max_attempts),
            ("PURGE_BATCH_SIZE", self.purge_batch_size),
            ("PASSWORD_RESET_TTL", self.password_reset_ttl),
            ("EMAIL_VERIFICATION_TTL", self.email_verification_ttl),
            ("INVITATION_TTL", self.invitation_ttl),
            ("PASSWORD_FORGOT_EMAIL_MAX_ATTEMPTS", self.password_forgot_email_max_attempts),
            ("PASSWORD_FORGOT_IP_MAX_ATTEMPTS", self.password_forgot_ip_max_attempts),
            ("MFA_MANAGE_MAX_AGE", self.mfa_manage_max_age),
            ("MFA_TOKEN_TTL", self.mfa_token_ttl),
            ("MFA_USER_MAX_ATTEMPTS", self.mfa_user_max_attempts),
            ("MFA_TOKEN_MAX_ATTEMPTS", self.mfa_token_max_attempts),
            ("ADMIN_MAX_AUTH_AGE", self.admin_max_auth_age),
        ):
            if number <= 0:
                raise ConfigError(f"{name} must be a positive number")
        if self.purge_interval < 0:
            raise ConfigError("PURGE_INTERVAL cannot be negative (0 turns the timer off)")
        if self.audit_retention <= 0:
            raise ConfigError("AUDIT_RETENTION must be a positive number of seconds")
        if self.max_header_bytes <= 0:
            raise ConfigError("MAX_HEADER_BYTES must be a positive number")
        for name, seconds in (
            ("HEADER_READ_TIMEOUT", self.header_read_timeout),
            ("BODY_READ_TIMEOUT", self.body_read_timeout),
            ("DATABASE_CONNECT_TIMEOUT", self.database_connect_timeout),
            ("REVOCATION_POLL_INTERVAL", self.revocation_poll_interval),
        ):
            if not seconds > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.session_short_max_age <= 0:
            raise ConfigError("SESSION_SHORT_MAX_AGE must be positive")
        if self.session_idle_timeout < 0 or self.max_sessions_per_user < 0:
            raise ConfigError(
                "SESSION_IDLE_TIMEOUT and MAX_SESSIONS_PER_USER cannot be negative (0: off)"
            )
        for origin in self.allowed_origins:
            if origin == "*" or "://" not in origin or origin.endswith("/"):
                # Credentialed CORS must name each origin: scheme://host[:port], no path.
                raise ConfigError("ALLOWED_ORIGINS entries must look like https://app.example")
        if self.public_url is not None and not _is_base_url(self.public_url, ("http", "https")):
            raise ConfigError("PUBLIC_URL must look like https://auth.example.com[/path]")
        self._check_mail()
        # Imported here: metadata's use cases import the database layer, which imports this.
        from tokenrota_server.metadata import check_claim_keys

        try:
            check_claim_keys(self.token_claims_from_app_metadata)
        except ValueError as taken:
            raise ConfigError(
                f"TOKEN_CLAIMS_FROM_APP_METADATA may not name a registered claim: {taken}"
            ) from None
        if self.is_production and not _is_base_url(self.token_issuer, ("https",)):
            # RFC 8414: the issuer is the base URL clients are sent to; never taken from a request.
            raise ConfigError(
                "ENV=production needs TOKEN_ISSUER to be the service's https URL,"
                " e.g. https://auth.example.com"
            )
        if self.database_pooler not in DATABASE_POOLERS:
            raise ConfigError(f"DATABASE_POOLER must be one of {', '.join(DATABASE_POOLERS)}")
        if self.database_direct_url is not None:
            _check_database_url("DATABASE_DIRECT_URL", self.database_direct_url)
        if self.argon2_threads == 1 or self.argon2_threads < 0:
            # One thread could not be shared: hashing new secrets would hold it from logins.
            raise ConfigError("ARGON2_THREADS must be at least 2 (0: one per core, at least 2)")
        if self.argon2_max_queued_checks <= 0:
            raise ConfigError("ARGON2_MAX_QUEUED_CHECKS must be a positive number")
        if self.argon2_max_queued_hashes <= 0:
            raise ConfigError("ARGON2_MAX_QUEUED_HASHES must be a positive number")
        self._check_webauthn()
        self._check_admin_audience()

    def _check_admin_audience(self) -> None:
        # Imported here, as metadata above: the database layer imports this module.
        from tokenrota_server.db.resources import check_uri
        from tokenrota_server.errors import InvalidTarget

        audience = self.admin_api_audience
        try:
            if self.admin_audience is not None:
                # The default is the base URL's, checked already (an IPv6 host's brackets,
                # which a registered resource's URI never has, included).
                check_uri(audience)
        except InvalidTarget:
            raise ConfigError(
                "ADMIN_AUDIENCE must be an absolute URI without a fragment,"
                " e.g. https://auth.example.com/admin"
            ) from None
        if audience == self.token_audience:
            # A token for the service's own routes must never open the admin API, nor the reverse.
            raise ConfigError("ADMIN_AUDIENCE must differ from TOKEN_AUDIENCE")

    @property
    def admin_api_audience(self) -> str:
        """The `aud` of a person's tokens for the admin API: ADMIN_AUDIENCE, else the public
        base URL + "/admin"."""
        return self.admin_audience or f"{self.public_base_url}/admin"

    @property
    def session_database_url(self) -> str | None:
        """Where a connection that needs a server session of its own goes (migrations, the
        schema check, a LISTEN): DATABASE_DIRECT_URL, else DATABASE_URL."""
        return self.database_direct_url or self.database_url

    def _check_mfa_key(self) -> None:
        if self.mfa_encryption_key is None:
            if self.is_production:
                raise ConfigError(
                    "ENV=production needs MFA_ENCRYPTION_KEY"
                    f" (a random value of at least {MIN_SECRET_BYTES} bytes)"
                )
            return
        key = str(self.mfa_encryption_key)
        if len(key.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"MFA_ENCRYPTION_KEY must be at least {MIN_SECRET_BYTES} bytes")
        if len(set(key)) < MIN_DISTINCT_SECRET_CHARACTERS:
            raise ConfigError("MFA_ENCRYPTION_KEY must be a random value, not a repeated pattern")

    @property
    def mfa_key_material(self) -> bytes:
        """What the TOTP secrets' key is derived from: MFA_ENCRYPTION_KEY, else (never in
        production) the refresh secret, under a label of its own (tokenrota_server.mfa_crypto)."""
        if self.mfa_encryption_key is not None:
            return str(self.mfa_encryption_key).encode()
        return b"no MFA_ENCRYPTION_KEY:" + str(self.refresh_token_secret).encode()

    def _check_mail(self) -> None:
        """Refuse mail settings that would send broken links, headers or credentials."""
        if self.mail_poll_interval < 0:
            raise ConfigError("MAIL_POLL_INTERVAL cannot be negative (0: this instance sends none)")
        for name, url in (
            ("PASSWORD_RESET_URL", self.password_reset_url),
            ("EMAIL_VERIFICATION_URL", self.email_verification_url),
            ("INVITATION_URL", self.invitation_url),
        ):
            if url is not None and not _is_page_url(url):
                raise ConfigError(f"{name} must look like https://app.example/reset[?query]")
        if not self.mail_from.isprintable() or "@" not in self.mail_from:
            # A CR or LF here would let the From header carry a second header.
            raise ConfigError("MAIL_FROM must be one line with an address, e.g. Auth <a@b.example>")
        if self.smtp_url is not None:
            try:
                parts = urlsplit(str(self.smtp_url))
                parts.port  # noqa: B018 - raises ValueError on a port that is not a number
            except ValueError:
                raise ConfigError("SMTP_URL is not a valid URL") from None
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                # Only the scheme is quoted back: the URL may hold a password.
                raise ConfigError("SMTP_URL must be smtp://[user:pass@]host[:port] or smtps://...")

    def _check_webauthn(self) -> None:
        """Refuse an RP id that is no host name, or an origin that could never use it."""
        rp_id = self.webauthn_rp_id
        if (
            not rp_id
            or rp_id != rp_id.lower()
            or not all(
                label and label.replace("-", "").isalnum() and label.isascii()
                for label in rp_id.split(".")
            )
        ):
            raise ConfigError("WEBAUTHN_RP_ID must be a lowercase domain, e.g. example.com")
        for origin in self.webauthn_origins:
            if not _origin_under(origin, rp_id):
                raise ConfigError(
                    f"WEBAUTHN_ORIGINS entries must look like https://app.{rp_id}"
                    f" (an origin whose host is or ends in .{rp_id})"
                )

    @property
    def passkey_origins(self) -> tuple[str, ...]:
        """The origins whose pages may register and use passkeys."""
        if self.webauthn_origins:
            return self.webauthn_origins
        return tuple(o for o in self.allowed_origins if _origin_under(o, self.webauthn_rp_id))

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def serves_docs(self) -> bool:
        return self.docs_enabled if self.docs_enabled is not None else not self.is_production

    @property
    def public_base_url(self) -> str:
        """The URL the service's endpoints are published under, without a trailing slash.

        From configuration only, never from a request's Host: TOKEN_ISSUER when it is an http(s)
        URL (RFC 8414: the issuer is the base URL), else PUBLIC_URL, else the service's own
        listening address (which production never reaches: it requires a URL issuer).
        """
        if _is_base_url(self.token_issuer, ("http", "https")):
            return self.token_issuer.rstrip("/")
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def reset_page_url(self) -> str:
        """Where a reset message's link leads: PASSWORD_RESET_URL, else the demo page."""
        return self.password_reset_url or f"{self.public_base_url}/demo?flow=reset"

    @property
    def invitation_page_url(self) -> str:
        """Where an invitation's link leads: INVITATION_URL, else the reset page."""
        return self.invitation_url or self.reset_page_url

    @property
    def verification_page_url(self) -> str:
        """Where a verification message's link leads: EMAIL_VERIFICATION_URL, else the demo."""
        return self.email_verification_url or f"{self.public_base_url}/demo?flow=verify"

    @property
    def uses_dev_mailbox(self) -> bool:
        """Mail goes to .eml files under DATA_DIR/mail/ (no SMTP_URL, not production)."""
        return self.smtp_url is None and not self.is_production


def _is_page_url(text: str) -> bool:
    """Whether `text` is an http(s) page a token can be appended to: no fragment, one line."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "#" not in text
        and text.isascii()
        and text.isprintable()
        and " " not in text
    )


def _origin_under(origin: str, rp_id: str) -> bool:
    """Whether `origin` is scheme://host[:port] with its host `rp_id` or under it; https, or
    http on localhost (the browser's secure contexts, WebAuthn L2 §5.1.3)."""
    try:
        parts = urlsplit(origin)
        host, _ = parts.hostname, parts.port
    except ValueError:
        return False
    if host is None or parts.path or parts.query or parts.fragment or parts.username:
        return False
    secure = parts.scheme == "https" or (parts.scheme == "http" and host == "localhost")
    return secure and (host == rp_id or host.endswith("." + rp_id))


def _check_database_url(name: str, url: str) -> None:
    """Raise `ConfigError` unless `url` (variable `name`) is a URL asyncpg connects with."""
    # Only the scheme is quoted back: the rest of the URL may hold a password.
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL") from None
    if scheme not in DATABASE_URL_SCHEMES:
        accepted = " or ".join(f"{option}://" for option in DATABASE_URL_SCHEMES)
        given = f"{scheme}://" if scheme else "a URL without a scheme"
        raise ConfigError(f"{name} must start with {accepted}, not {given}")


def _is_base_url(text: str, schemes: tuple[str, ...]) -> bool:
    """Whether `text` is scheme://host[:port][/path], with no query, fragment or credentials."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return (
        parts.scheme in schemes
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and not parts.query
        and not parts.fragment
        and "?" not in text
        and "#" not in text
        and text.isascii()
        and text.isprintable()
        and " " not in text
    )


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables; raise `ConfigError` with a one-line reason.

    Each field is read from the variable of its name in capitals, by the parser its metadata
    names; an unset or empty variable leaves the field at its default.
    """
    values: dict[str, Any] = {}
    for setting in fields(Settings):
        name = setting.name.upper()
        raw = environ.get(name, "")
        if raw != "":
            values[setting.name] = setting.metadata["parse"](name, raw)
    env = values.get("env", _default_of("env"))
    if "access_token_secret" not in values or "refresh_token_secret" not in values:
        if env == "production":
            raise ConfigError(
                "ENV=production needs ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET "
                f"(two different random values of at least {MIN_SECRET_BYTES} bytes)"
            )
        raise ConfigError("ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET are not set")
    if "allowed_origins" not in values and env == "development":
        # `make run` then /demo: the service's own local address may use the cookie.
        port = values.get("port", _default_of("port"))
        values["allowed_origins"] = (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    return Settings(**values)


def _default_of(name: str) -> Any:
    return next(setting.default for setting in fields(Settings) if setting.name == name)


def ensure_development_secrets(environ: dict[str, str], data_dir: Path) -> Path | None:
    """Fill missing secrets from `data_dir/secrets.env`, generating that file (0600) if needed.

    Only for development: production must be given its secrets. Returns the file's path when
    it supplied at least one secret, so the caller can say so.
    """
    if environ.get("ENV", "development") == "production":
        return None
    names = ("ACCESS_TOKEN_SECRET", "REFRESH_TOKEN_SECRET", "MFA_ENCRYPTION_KEY")
    if all(environ.get(name) for name in names):
        return None
    path = data_dir / "secrets.env"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{name}={secrets.token_urlsafe(48)}\n" for name in names)
        # Create with 0600 from the start: the secrets must never be readable by others.
        path.touch(mode=0o600)
        path.write_text(lines)
    else:
        if path.stat().st_mode & 0o077:
            # Copied or unpacked with a lax umask: the secrets are ours to keep private.
            path.chmod(0o600)
        known = {line.partition("=")[0] for line in path.read_text().splitlines()}
        missing = [name for name in names if name not in known]
        if missing:
            # A file from before a secret existed (MFA_ENCRYPTION_KEY): add it, keep the rest.
            with path.open("a") as appended:
                appended.writelines(f"{name}={secrets.token_urlsafe(48)}\n" for name in missing)
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name in names and not environ.get(name):
            environ[name] = value.strip()
    return path
