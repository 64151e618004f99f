"""SQL for roles (a name and the scopes it grants) and the users who hold them.

A user's access token carries the union of their roles' scopes as `scope` and the role names
as `roles`, read by the same statement that finds the session at login and refresh
(`GRANTS_OF`), so a change shows at the user's next refresh. Functions take the connection
first and own no transaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import InvalidInput, RoleInUse

# Lower-case, and a valid RFC 6749 scope-token too, so a role's name can never smuggle a space
# or a quote into a token or a log line. The migration's CHECK constraint says the same.
ROLE_NAME = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); ours are at most 128 long.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
MAX_SCOPES_PER_ROLE = 100
MAX_ROLES_PER_USER = 100

# The role names and the distinct scopes of the user whose id is `{user_id}` (an SQL
# expression of the enclosing statement), as one record column `grants`: one subquery, so the
# hot path (every refresh) pays one index scan of user_roles. Aggregates over no rows still
# answer one row; a role without scopes contributes no NULL scope. `{aal2}` is an SQL boolean,
# whether the token is minted at aal2: a role marked `require_mfa` contributes its name and
# scopes only then (at aal1 the user still gets a token, without them: never a lock-out).
GRANTS_OF = (
    "(SELECT ROW(coalesce(array_agg(DISTINCT granted_role.role), '{{}}'::text[]),"
    " coalesce(array_agg(DISTINCT granted.scope) FILTER (WHERE granted.scope IS NOT NULL),"
    " '{{}}'::text[]),"
    # The user's app_metadata, whose chosen keys become claims: read by the same statement.
    " (SELECT claimed.app_metadata FROM users claimed WHERE claimed.id = {user_id}))"
    " FROM user_roles granted_role"
    " JOIN roles granting ON granting.name = granted_role.role"
    " LEFT JOIN LATERAL unnest(granting.scopes) AS granted(scope) ON true"
    " WHERE granted_role.user_id = {user_id} AND (NOT granting.require_mfa OR {aal2}))"
    " AS grants"
)


@dataclass(frozen=True)
class Grants:
    """What a user's roles give them: the role names and the union of their scopes, sorted."""

    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    # The user's app_metadata (operators'); settings choose which keys become claims.
    app_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        """The scopes as an access token's `scope` claim: space-separated."""
        return " ".join(self.scopes)


@dataclass(frozen=True)
class Role:
    """A role as the admin API shows it."""

    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    # Its scopes (and name) go only into aal2 tokens (`GRANTS_OF`).
    require_mfa: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "require_mfa": self.require_mfa,
            "created_at": self.created_at.isoformat(),
        }


def grants_of_row(row: asyncpg.Record) -> Grants:
    """The `Grants` of a row that has the `grants` column of `GRANTS_OF`."""
    roles, scopes, app_metadata = row["grants"]
    # Sorted here, not in SQL: Python's order is the same on every database collation.
    return Grants(
        roles=tuple(sorted(roles)),
        scopes=tuple(sorted(scopes)),
        app_metadata=json.loads(app_metadata) if app_metadata is not None else {},
    )


def check_role_name(name: str) -> str:
    """Return `name` if it can name a role; raise `InvalidInput` otherwise."""
    if not ROLE_NAME.fullmatch(name):
        raise InvalidInput(
            "A role name is 1 to 64 characters: lower-case letters, digits and _ . : -,"
            " starting with a letter or digit."
        )
    return name


def check_scopes(scopes: object) -> tuple[str, ...]:
    """The scope tokens of a JSON list, sorted and without repeats; raise `InvalidInput`."""
    if not isinstance(scopes, list) or len(scopes) > MAX_SCOPES_PER_ROLE:
        raise InvalidInput(f"'scopes' must be a list of at most {MAX_SCOPES_PER_ROLE} scopes.")
    for scope in scopes:
        if not isinstance(scope, str) or not SCOPE_TOKEN.fullmatch(scope):
            raise InvalidInput(
                "Each scope is 1 to 128 printable ASCII characters without space, quote"
                " or backslash (RFC 6749 scope-token)."
            )
    return tuple(sorted(set(scopes)))


def check_role_names(names: object) -> tuple[str, ...]:
    """The role names of a JSON list, sorted and without repeats; raise `InvalidInput`."""
    if not isinstance(names, list) or len(names) > MAX_ROLES_PER_USER:
        raise InvalidInput(f"'roles' must be a list of at most {MAX_ROLES_PER_USER} role names.")
    for name in names:
        if not isinstance(name, str):
            raise InvalidInput("Each role is a role's name.")
        check_role_name(name)
    return tuple(sorted(set(names)))


def _role(row: asyncpg.Record) -> Role:
    return Role(
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        require_mfa=row["require_mfa"],
    )


async def put_role(
    connection: Connection,
    *,
    name: str,
    scopes: tuple[str, ...],
    now: datetime,
    require_mfa: bool = False,
) -> tuple[Role, bool]:
    """Create the role or replace its scopes and `require_mfa`; return it and whether it is
    new."""
    row = await connection.fetchrow(
        "INSERT INTO roles AS r (name, scopes, created_at, require_mfa) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET scopes = excluded.scopes,"
        " require_mfa = excluded.require_mfa"
        " RETURNING r.name, r.scopes, r.created_at, r.require_mfa, (xmax = 0) AS created",
        name,
        list(scopes),
        now,
        require_mfa,
    )
    assert row is not None
    return _role(row), bool(row["created"])


async def list_roles(connection: Connection) -> list[Role]:
    """Every role, by name."""
    rows = await connection.fetch(
        "SELECT name, scopes, created_at, require_mfa FROM roles ORDER BY name"
    )
    return [_role(row) for row in rows]


async def delete_role(connection: Connection, name: str) -> bool:
    """Delete a role nobody holds; False if there is none; raise `RoleInUse` if held.

    The foreign key decides, so a grant committed concurrently cannot be left dangling.
    """
    try:
        status = await connection.execute("DELETE FROM roles WHERE name = $1", name)
    except (asyncpg.RestrictViolationError, asyncpg.ForeignKeyViolationError):
        raise RoleInUse() from None
    return bool(status == "DELETE 1")


async def unknown_roles(connection: Connection, names: tuple[str, ...]) -> list[str]:
    """The names among `names` that no role has."""
    rows = await connection.fetch(
        "SELECT n FROM unnest($1::text[]) AS n WHERE NOT EXISTS"
        " (SELECT 1 FROM roles WHERE name = n) ORDER BY n",
        list(names),
    )
    return [row["n"] for row in rows]


async def set_user_roles(connection: Connection, user_id: UUID, names: tuple[str, ...]) -> None:
    """Make `names` exactly the user's roles. Two statements: the caller's transaction.

    Raises `InvalidInput` if a role does not exist (checked first by the caller with
    `unknown_roles`; a role deleted meanwhile fails the foreign key and lands here).
    """
    await connection.execute(
        "DELETE FROM user_roles WHERE user_id = $1 AND NOT role = ANY($2::text[])",
        user_id,
        list(names),
    )
    try:
        await connection.execute(
            "INSERT INTO user_roles (user_id, role) SELECT $1, unnest($2::text[])"
            " ON CONFLICT DO NOTHING",
            user_id,
            list(names),
        )
    except asyncpg.ForeignKeyViolationError:
        raise InvalidInput("No role has this name.") from None


async def lock_roles_of(connection: Connection, user_id: UUID) -> list[str] | None:
    """The user's role names, with the user's row locked until the transaction ends (so two
    changes of one user's roles apply one after the other); None if there is no such user."""
    names: list[str] | None = await connection.fetchval(
        "SELECT coalesce((SELECT array_agg(role) FROM user_roles WHERE user_id = u.id),"
        " '{}'::text[]) FROM users u WHERE u.id = $1 FOR UPDATE",
        user_id,
    )
    return names


async def grant_role(connection: Connection, user_id: UUID, name: str) -> bool:
    """Give the user a role; False if they held it already. Raise `InvalidInput` if unknown."""
    try:
        status = await connection.execute(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            user_id,
            name,
        )
    except asyncpg.ForeignKeyViolationError:
        raise InvalidInput("No role has this name.") from None
    return bool(status == "INSERT 0 1")


async def revoke_role(connection: Connection, user_id: UUID, name: str) -> bool:
    """Take a role from the user; False if they did not hold it."""
    status = await connection.execute(
        "DELETE FROM user_roles WHERE user_id = $1 AND role = $2", user_id, name
    )
    return bool(status == "DELETE 1")


async def grants_of(connection: Connection, user_id: UUID) -> Grants:
    """The user's roles and scopes."""
    row = await connection.fetchrow(
        "SELECT " + GRANTS_OF.format(user_id="$1::uuid", aal2="true"), user_id
    )
    assert row is not None
    return grants_of_row(row)
