"""SQL for OAuth clients (the services that call us) and their revoked access tokens.

A client is a registered service: an id, a name, the argon2 hash of its secret (the secret is
shown once, at creation or rotation), the scopes it may ask for, and `disabled_at`. Functions
take the connection first and own no transaction.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import InvalidScope

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), joined by single spaces.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Ids we issue are 22 characters; anything longer or odd is unknown without asking Postgres
# (which would refuse a NUL byte with an error rather than a miss).
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.~-]{1,128}")


@dataclass(frozen=True)
class Client:
    """A registered client, as listed; never carries its secret or hash."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None
    # RFC 9449 §5.2: every token request of this client must carry a DPoP proof.
    dpop_bound_access_tokens: bool = False

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
            "dpop_bound_access_tokens": self.dpop_bound_access_tokens,
        }


@dataclass(frozen=True)
class StoredClient:
    """A client with the hash its secret is checked against; repr hides the hash."""

    client: Client
    secret_hash: str
    # The secret before the last rotation, while its grace period lasts (`find_client`'s `now`).
    previous_secret_hash: str | None = None

    def __repr__(self) -> str:
        return f"StoredClient(client={self.client!r})"


def parse_scope(text: str) -> tuple[str, ...]:
    """The scope tokens of a space-delimited scope string; raise `InvalidScope` if malformed."""
    tokens = tuple(text.split(" "))
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidScope("The scope is malformed.")
    # Order and repeats carry no meaning (RFC 6749 §3.3); keep the first of each.
    return tuple(dict.fromkeys(tokens))


def is_plausible_client_id(client_id: str) -> bool:
    """Whether `client_id` could be one we issued; anything else is unknown, unasked."""
    return _CLIENT_ID.fullmatch(client_id) is not None


def new_client_id() -> str:
    """128 random bits in hex: never starts with "-", which a command line reads as an option."""
    return secrets.token_hex(16)


def new_client_secret() -> str:
    """256 random bits: a secret nobody guesses, whatever hash protects it at rest."""
    return secrets.token_urlsafe(32)


def _client(row: asyncpg.Record) -> Client:
    return Client(
        client_id=row["client_id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        dpop_bound_access_tokens=row["dpop_bound_access_tokens"],
    )


async def insert_client(
    connection: Connection,
    *,
    client_id: str,
    name: str,
    secret_hash: str,
    scopes: tuple[str, ...],
    now: datetime,
    dpop_bound_access_tokens: bool = False,
) -> Client:
    """Store a new client."""
    row = await connection.fetchrow(
        "INSERT INTO clients"
        " (client_id, name, secret_hash, scopes, created_at, dpop_bound_access_tokens)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " RETURNING client_id, name, scopes, created_at, disabled_at, dpop_bound_access_tokens",
        client_id,
        name,
        secret_hash,
        list(scopes),
        now,
        dpop_bound_access_tokens,
    )
    assert row is not None
    return _client(row)


async def find_client(
    connection: Connection, client_id: str, now: datetime | None = None
) -> StoredClient | None:
    """The client with this id, disabled or not, with its secret hash (and, given `now`, the
    previous secret's while its grace period lasts); None if unknown."""
    if not is_plausible_client_id(client_id):
        return None
    row = await connection.fetchrow(
        "SELECT client_id, name, scopes, created_at, disabled_at, dpop_bound_access_tokens,"
        " secret_hash, CASE WHEN previous_secret_expires_at > $2 THEN previous_secret_hash END"
        " AS previous_secret_hash FROM clients WHERE client_id = $1",
        client_id,
        now,
    )
    if row is None:
        return None
    return StoredClient(
        client=_client(row),
        secret_hash=row["secret_hash"],
        previous_secret_hash=row["previous_secret_hash"],
    )


async def disable_client(connection: Connection, client_id: str, now: datetime) -> bool:
    """Disable a client (its tokens go inactive at introspection); False if none was active."""
    status = await connection.execute(
        "UPDATE clients SET disabled_at = $2 WHERE client_id = $1 AND disabled_at IS NULL",
        client_id,
        now,
    )
    return bool(status == "UPDATE 1")


async def revoke_access_token(
    connection: Connection, *, jti: str, client_id: str, expires_at: datetime, now: datetime
) -> None:
    """Record a client access token as revoked until its expiry. Repeating it changes nothing."""
    await connection.execute(
        "INSERT INTO revoked_access_tokens (jti, client_id, expires_at, revoked_at)"
        " SELECT $1, client_id, $3, $4 FROM clients WHERE client_id = $2"
        " ON CONFLICT (jti) DO NOTHING",
        jti,
        client_id,
        expires_at,
        now,
    )


async def is_client_token_live(connection: Connection, *, client_id: str, jti: str) -> bool:
    """Whether a client access token's client is active and the token not revoked."""
    if not is_plausible_client_id(client_id):
        return False
    live = await connection.fetchval(
        "SELECT NOT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $2)"
        " FROM clients WHERE client_id = $1 AND disabled_at IS NULL",
        client_id,
        jti,
    )
    return bool(live)


async def is_admin_token_live(
    connection: Connection, *, client_id: str, jti: str, scope: str
) -> bool:
    """Whether a client's token may still act with `scope`: the client is active and still
    has that scope, and the token is not revoked."""
    if not is_plausible_client_id(client_id):
        return False
    live = await connection.fetchval(
        "SELECT $3 = ANY(scopes) AND NOT EXISTS"
        " (SELECT 1 FROM revoked_access_tokens WHERE jti = $2)"
        " FROM clients WHERE client_id = $1 AND disabled_at IS NULL",
        client_id,
        jti,
        scope,
    )
    return bool(live)


# -- the operators' API (tokenrota_server.oauth_clients) ---------------------------------------

_ADMIN_COLUMNS = (
    "client_id, name, scopes, created_at, disabled_at, dpop_bound_access_tokens,"
    " previous_secret_expires_at"
)


@dataclass(frozen=True)
class ManagedClient:
    """A client as operators see it: the listing's fields and when the previous secret dies."""

    client: Client
    previous_secret_expires_at: datetime | None

    def to_json(self, now: datetime) -> dict[str, object]:
        # A grace period over is no longer worth showing.
        grace = self.previous_secret_expires_at
        return self.client.to_json() | {
            "disabled": self.client.disabled,
            "previous_secret_expires_at": grace.isoformat() if grace and grace > now else None,
        }


def _managed(row: asyncpg.Record) -> ManagedClient:
    return ManagedClient(_client(row), row["previous_secret_expires_at"])


async def list_clients_page(
    connection: Connection, *, after: tuple[datetime, str] | None, limit: int
) -> list[ManagedClient]:
    """Up to `limit` clients created after the key `after` (created_at, client_id), oldest
    first."""
    rows = await connection.fetch(
        f"SELECT {_ADMIN_COLUMNS} FROM clients"  # noqa: S608 - constants only
        " WHERE $1::timestamptz IS NULL OR (created_at, client_id) > ($1, $2)"
        " ORDER BY created_at, client_id LIMIT $3",
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_managed(row) for row in rows]


async def find_managed_client(
    connection: Connection, client_id: str, *, for_update: bool = False
) -> ManagedClient | None:
    """The client with this id as operators see it (locked until the transaction ends, with
    `for_update`); None if unknown."""
    if not is_plausible_client_id(client_id):
        return None
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(
        f"SELECT {_ADMIN_COLUMNS} FROM clients WHERE client_id = $1{lock}",  # noqa: S608 - constants only
        client_id,
    )
    return _managed(row) if row is not None else None


async def update_client(
    connection: Connection,
    client_id: str,
    *,
    name: str | None,
    scopes: tuple[str, ...] | None,
    disabled: bool | None,
    now: datetime,
    dpop_bound_access_tokens: bool | None = None,
) -> ManagedClient | None:
    """Change what is given (None: keep it); None if there is no such client. Disabling an
    already disabled client keeps its first `disabled_at`."""
    if not is_plausible_client_id(client_id):
        return None
    row = await connection.fetchrow(
        "UPDATE clients SET name = coalesce($2, name), scopes = coalesce($3, scopes),"  # noqa: S608 - constants only
        " disabled_at = CASE WHEN $4::boolean IS NULL THEN disabled_at"
        " WHEN $4 THEN coalesce(disabled_at, $5) END,"
        " dpop_bound_access_tokens = coalesce($6, dpop_bound_access_tokens)"
        f" WHERE client_id = $1 RETURNING {_ADMIN_COLUMNS}",
        client_id,
        name,
        list(scopes) if scopes is not None else None,
        disabled,
        now,
        dpop_bound_access_tokens,
    )
    return _managed(row) if row is not None else None


async def rotate_secret_hash(
    connection: Connection,
    client_id: str,
    secret_hash: str,
    *,
    previous_expires_at: datetime | None,
) -> ManagedClient | None:
    """Give an active client a new secret hash, keeping the old one until
    `previous_expires_at` (None: it dies now); None if there is no such active client."""
    if not is_plausible_client_id(client_id):
        return None
    # On the right of SET, `secret_hash` is the old value.
    row = await connection.fetchrow(
        "UPDATE clients SET secret_hash = $2,"  # noqa: S608 - constants only
        " previous_secret_hash = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret_hash END,"
        " previous_secret_expires_at = $3"
        f" WHERE client_id = $1 AND disabled_at IS NULL RETURNING {_ADMIN_COLUMNS}",
        client_id,
        secret_hash,
        previous_expires_at,
    )
    return _managed(row) if row is not None else None


async def delete_client(connection: Connection, client_id: str) -> bool:
    """Delete a client (the revocation feed names it, by trigger); False if unknown."""
    if not is_plausible_client_id(client_id):
        return False
    status = await connection.execute("DELETE FROM clients WHERE client_id = $1", client_id)
    return bool(status == "DELETE 1")
