"""Settings: read once from the environment, validated, frozen, then passed in.

Nothing else in the service reads `os.environ`. Secrets are kept as starlette `Secret`s so that a
repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; see the README's settings table."""

    access_token_secret: Secret = field(repr=False)
    refresh_token_secret: Secret = field(repr=False)
    env: str = "development"
    database_url: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".data")
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 7 * 24 * 3600
    session_max_age: int = 30 * 24 * 3600
    refresh_reuse_interval: int = 10
    rotate_refresh_tokens: bool = True
    token_issuer: str = "token-service"
    token_audience: str = "token-service"
    jwt_leeway: int = 30
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 4
    max_body_bytes: int = 64 * 1024
    db_pool_min_size: int = 2
    db_pool_max_size: int = 10
    # PEM text of the private key that signs access tokens (ES256 or RS256); None: HS256.
    access_token_signing_key: Secret | None = field(default=None, repr=False)
    # PEM texts of earlier signing keys, still published and accepted (see README, rotation).
    access_token_previous_keys: tuple[str, ...] = field(default=(), repr=False)
    # Login throttle: attempts per email and per client address within one window (seconds).
    login_email_max_attempts: int = 10
    login_ip_max_attempts: int = 100
    login_throttle_window: int = 15 * 60
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Expired rows are purged every PURGE_INTERVAL seconds (0: never, by the server).
    purge_interval: int = 3600
    purge_batch_size: int = 1000
    # Browser frontends: origins allowed to use the refresh cookie (and CORS with credentials).
    allowed_origins: tuple[str, ...] = ()
    cookie_secure: bool = True
    # GET /docs (Swagger UI); None means on, except in production.
    docs_enabled: bool | None = None

    def __post_init__(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"ENV must be one of {', '.join(ENVIRONMENTS)}")
        if self.database_url is not None:
            # Only the scheme is quoted back: the rest of the URL may hold a password.
            try:
                scheme = urlsplit(self.database_url).scheme
            except ValueError:
                raise ConfigError("DATABASE_URL is not a valid URL") from None
            if scheme not in DATABASE_URL_SCHEMES:
                accepted = " or ".join(f"{name}://" for name in DATABASE_URL_SCHEMES)
                given = f"{scheme}://" if scheme else "a URL without a scheme"
                raise ConfigError(f"DATABASE_URL must start with {accepted}, not {given}")
        access, refresh = str(self.access_token_secret), str(self.refresh_token_secret)
        for name, value in (("ACCESS_TOKEN_SECRET", access), ("REFRESH_TOKEN_SECRET", refresh)):
            if len(value.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes")
            if len(set(value)) < MIN_DISTINCT_SECRET_CHARACTERS:
                raise ConfigError(f"{name} must be a random value, not a repeated pattern")
        if secrets.compare_digest(access.encode(), refresh.encode()):
            raise ConfigError("ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET must differ")
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
            ("PURGE_BATCH_SIZE", self.purge_batch_size),
        ):
            if number <= 0:
                raise ConfigError(f"{name} must be a positive number")
        if self.purge_interval < 0:
            raise ConfigError("PURGE_INTERVAL cannot be negative (0 turns the timer off)")
        for origin in self.allowed_origins:
            if origin == "*" or "://" not in origin or origin.endswith("/"):
                # Credentialed CORS must name each origin: scheme://host[:port], no path.
                raise ConfigError("ALLOWED_ORIGINS entries must look like https://app.example")

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def serves_docs(self) -> bool:
        return self.docs_enabled if self.docs_enabled is not None else not self.is_production


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables; raise `ConfigError` with a one-line reason."""
    env = environ.get("ENV", "development")
    access = environ.get("ACCESS_TOKEN_SECRET", "")
    refresh = environ.get("REFRESH_TOKEN_SECRET", "")
    if not access or not refresh:
        if env == "production":
            raise ConfigError(
                "ENV=production needs ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET "
                f"(two different random values of at least {MIN_SECRET_BYTES} bytes)"
            )
        raise ConfigError("ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET are not set")
    return Settings(
        access_token_secret=Secret(access),
        refresh_token_secret=Secret(refresh),
        env=env,
        database_url=environ.get("DATABASE_URL") or None,
        host=environ.get("HOST", "127.0.0.1"),
        port=_integer(environ, "PORT", 8000),
        data_dir=Path(environ.get("DATA_DIR", ".data")),
        access_token_ttl=_integer(environ, "ACCESS_TOKEN_TTL", 15 * 60),
        refresh_token_ttl=_integer(environ, "REFRESH_TOKEN_TTL", 7 * 24 * 3600),
        session_max_age=_integer(environ, "SESSION_MAX_AGE", 30 * 24 * 3600),
        refresh_reuse_interval=_integer(environ, "REFRESH_REUSE_INTERVAL", 10),
        rotate_refresh_tokens=_boolean(environ, "ROTATE_REFRESH_TOKENS", True),
        token_issuer=environ.get("TOKEN_ISSUER", "token-service"),
        token_audience=environ.get("TOKEN_AUDIENCE", "token-service"),
        jwt_leeway=_integer(environ, "JWT_LEEWAY", 30),
        argon2_time_cost=_integer(environ, "ARGON2_TIME_COST", 3),
        argon2_memory_cost=_integer(environ, "ARGON2_MEMORY_COST", 65536),
        argon2_parallelism=_integer(environ, "ARGON2_PARALLELISM", 4),
        max_body_bytes=_integer(environ, "MAX_BODY_BYTES", 64 * 1024),
        db_pool_min_size=_integer(environ, "DB_POOL_MIN_SIZE", 2),
        db_pool_max_size=_integer(environ, "DB_POOL_MAX_SIZE", 10),
        access_token_signing_key=_pem_file(
            "ACCESS_TOKEN_SIGNING_KEY", environ.get("ACCESS_TOKEN_SIGNING_KEY", "")
        ),
        access_token_previous_keys=tuple(
            str(_pem_file("ACCESS_TOKEN_PREVIOUS_KEYS", path))
            for path in environ.get("ACCESS_TOKEN_PREVIOUS_KEYS", "").split(",")
            if path.strip()
        ),
        login_email_max_attempts=_integer(environ, "LOGIN_EMAIL_MAX_ATTEMPTS", 10),
        login_ip_max_attempts=_integer(environ, "LOGIN_IP_MAX_ATTEMPTS", 100),
        login_throttle_window=_integer(environ, "LOGIN_THROTTLE_WINDOW", 15 * 60),
        trusted_proxies=_networks(environ, "TRUSTED_PROXIES"),
        purge_interval=_integer(environ, "PURGE_INTERVAL", 3600),
        purge_batch_size=_integer(environ, "PURGE_BATCH_SIZE", 1000),
        allowed_origins=_list(environ, "ALLOWED_ORIGINS") or _local_origins(environ, env),
        cookie_secure=_boolean(environ, "COOKIE_SECURE", True),
        docs_enabled=_boolean(environ, "DOCS_ENABLED", env != "production"),
    )


def ensure_development_secrets(environ: dict[str, str], data_dir: Path) -> Path | None:
    """Fill missing secrets from `data_dir/secrets.env`, generating that file (0600) if needed.

    Only for development: production must be given its secrets. Returns the file's path when
    it supplied at least one secret, so the caller can say so.
    """
    if environ.get("ENV", "development") == "production":
        return None
    names = ("ACCESS_TOKEN_SECRET", "REFRESH_TOKEN_SECRET")
    if all(environ.get(name) for name in names):
        return None
    path = data_dir / "secrets.env"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{name}={secrets.token_urlsafe(48)}\n" for name in names)
        # Create with 0600 from the start: the secrets must never be readable by others.
        path.touch(mode=0o600)
        path.write_text(lines)
    elif path.stat().st_mode & 0o077:
        # Copied or unpacked with a lax umask: the secrets are ours to keep private.
        path.chmod(0o600)
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name in names and not environ.get(name):
            environ[name] = value.strip()
    return path


def _integer(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _pem_file(name: str, path: str) -> Secret | None:
    """The contents of the PEM file at `path` (named by variable `name`); None when unset."""
    raw = path.strip()
    if not raw:
        return None
    try:
        return Secret(Path(raw).read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        # The path, not the contents: a key must never reach an error message.
        raise ConfigError(f"{name}: cannot read the key file {raw}") from None


def _list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in environ.get(name, "").split(",") if item.strip())


def _networks(
    environ: Mapping[str, str], name: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _list(environ, name))
    except ValueError:
        raise ConfigError(
            f"{name} must be a comma-separated list of addresses or networks"
        ) from None


def _local_origins(environ: Mapping[str, str], env: str) -> tuple[str, ...]:
    """In development, the service's own local address may use the cookie (for /demo)."""
    if env != "development":
        return ()
    port = environ.get("PORT") or "8000"
    return (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
