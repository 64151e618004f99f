"""Settings: read once from the environment, validated, frozen, then passed in.

Nothing else in the service reads `os.environ`. Secrets are kept as starlette `Secret`s so that a
repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import Secret

from service.errors import ConfigError

# RFC 8725 §3.5: an HMAC key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
ENVIRONMENTS = ("development", "test", "production")


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
    # GET /docs (Swagger UI); None means on, except in production.
    docs_enabled: bool | None = None

    def __post_init__(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"ENV must be one of {', '.join(ENVIRONMENTS)}")
        access, refresh = str(self.access_token_secret), str(self.refresh_token_secret)
        for name, value in (("ACCESS_TOKEN_SECRET", access), ("REFRESH_TOKEN_SECRET", refresh)):
            if len(value.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes")
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
