"""The administration commands: users, OAuth clients and the purge.

Each opens a pool of one connection on the settings' database (which the command line has
already checked), runs one use case, and returns the exit status: results on stdout, a
refusal as one `error:` line on stderr and status 1. Secrets are printed once, on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
from tokenrota.clock import utc_now

from tokenrota_server import admin, resources
from tokenrota_server import oauth_clients as oauth_clients_admin
from tokenrota_server.db import audit, oauth_clients, pagination, roles
from tokenrota_server.db import resources as resources_table
from tokenrota_server.db.pool import create_pool
from tokenrota_server.db.purge import PurgeBatch, purge_expired
from tokenrota_server.db.resources import GrantKind
from tokenrota_server.db.users import User
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import InvalidInput, ServiceError

if TYPE_CHECKING:
    from tokenrota_server.config import Settings
    from tokenrota_server.passwords import Passwords


def create_user(settings: Settings, email: str) -> int:
    """Create a user; the password from stdin (one line) or a terminal prompt. Prints its id."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        user = asyncio.run(_register(settings, email, password))
    except ServiceError as error:
        return _refused(error.description)
    print(user.id)
    return 0


async def disable_user(settings: Settings, email: str) -> int:
    """Disable the user with `email`, ending every session; prints how many ended."""
    async with _pool(settings) as pool:
        try:
            user_id = await admin.user_id_of(pool, _stored_form(email))
            ended = await admin.set_disabled(
                pool, user_id, disabled=True, actor=audit.CLI_ACTOR, now=utc_now()
            )
        except ServiceError as error:
            return _refused(error.description)
    print(f"user disabled; {ended} sessions ended")
    return 0


async def create_client(
    settings: Settings, name: str, scope: str, *, dpop_bound_access_tokens: bool = False
) -> int:
    """Register an OAuth client; prints its id and secret as one JSON line."""
    async with _pool_and_passwords(settings) as (pool, passwords):
        try:
            client, secret = await oauth_clients_admin.create_client(
                pool,
                passwords,
                name=oauth_clients_admin.check_name(name),
                scopes=oauth_clients.parse_scope(scope) if scope else (),
                actor=audit.CLI_ACTOR,
                now=utc_now(),
                dpop_bound_access_tokens=dpop_bound_access_tokens,
            )
        except ServiceError as error:
            return _refused(error.description)
    print(json.dumps({"client_id": client.client.client_id, "client_secret": secret}))
    return 0


async def rotate_client_secret(settings: Settings, client_id: str, grace_seconds: int = 0) -> int:
    """Give a client a new secret, the old one working `grace_seconds` more; prints the id and
    the secret as one JSON line."""
    async with _pool_and_passwords(settings) as (pool, passwords):
        try:
            _, secret = await oauth_clients_admin.rotate_secret(
                pool,
                passwords,
                client_id,
                grace_seconds=oauth_clients_admin.check_grace(grace_seconds),
                actor=audit.CLI_ACTOR,
                now=utc_now(),
            )
        except ServiceError as error:
            return _refused(error.description)
    print(json.dumps({"client_id": client_id, "client_secret": secret}))
    return 0


async def disable_client(settings: Settings, client_id: str) -> int:
    """Disable a client and the tokens it holds."""
    async with _pool(settings) as pool:
        try:
            _, changed = await oauth_clients_admin.update_client(
                pool, client_id, disabled=True, actor=audit.CLI_ACTOR, now=utc_now()
            )
        except ServiceError:
            changed = False
    if not changed:
        return _refused("no active client has this id")
    return 0


async def set_client_dpop(settings: Settings, client_id: str, required: bool) -> int:
    """Require DPoP of a client's token requests, or stop; prints the client as a JSON line."""
    async with _pool(settings) as pool:
        try:
            client, _ = await oauth_clients_admin.update_client(
                pool,
                client_id,
                dpop_bound_access_tokens=required,
                actor=audit.CLI_ACTOR,
                now=utc_now(),
            )
        except ServiceError as error:
            return _refused(error.description)
    print(json.dumps(client.to_json(utc_now())))
    return 0


async def list_clients(settings: Settings) -> int:
    """Print every client as a JSON line (never a secret), as the admin API lists them."""
    async with _pool(settings) as pool:
        cursor = None
        while True:
            now = utc_now()
            page, cursor = await oauth_clients_admin.list_clients(
                pool, cursor=cursor, limit=pagination.MAX_PAGE_SIZE
            )
            for client in page:
                print(json.dumps(client.to_json(now)))
            if cursor is None:
                return 0


async def purge(settings: Settings) -> int:
    """Delete expired rows in batches, printing each batch and the total."""

    def progress(number: int, batch: PurgeBatch) -> None:
        # Mail rows are named only when there were some: most batches have none.
        mail = (
            f", {batch.account_tokens} reset/verification tokens, {batch.mail_messages} messages"
            if batch.account_tokens or batch.mail_messages
            else ""
        )
        print(
            f"batch {number}: deleted {batch.refresh_tokens} refresh tokens, "
            f"{batch.sessions} sessions, {batch.login_attempts} login counters, "
            f"{batch.revoked_access_tokens} token revocations{mail}",
            flush=True,
        )

    async with _pool(settings) as pool:
        batches = await purge_expired(pool, settings, now=utc_now(), wait=True, on_batch=progress)
    print(f"purge done: {sum(batch.total for batch in batches)} rows in {len(batches)} batches")
    return 0


async def create_role(settings: Settings, name: str, scope: str, require_mfa: bool = False) -> int:
    """Create a role with the scopes of `scope` (space-separated), or replace its scopes (and
    `require_mfa`: its scopes only in aal2 tokens); prints the role as one JSON line."""
    try:
        roles.check_role_name(name)
        scopes = roles.check_scopes(scope.split(" ") if scope else [])
        async with _pool(settings) as pool:
            role, _ = await admin.put_role(
                pool, name, scopes, actor=audit.CLI_ACTOR, now=utc_now(), require_mfa=require_mfa
            )
    except ServiceError as error:
        return _refused(error.description)
    print(json.dumps(role.to_json()))
    return 0


async def change_role(settings: Settings, email: str, name: str, *, grant: bool) -> int:
    """Grant a role to the user with `email`, or take it back; effective at their next refresh."""
    async with _pool(settings) as pool:
        try:
            changed = await admin.change_role(
                pool, _stored_form(email), name, grant=grant, actor=audit.CLI_ACTOR, now=utc_now()
            )
        except ServiceError as error:
            return _refused(error.description)
    verb = "granted" if grant else "revoked"
    print(f"role {verb}" if changed else f"nothing to do: role already {verb}")
    return 0


async def list_users(settings: Settings, email_prefix: str) -> int:
    """Print every user whose email starts with `email_prefix` (any case) as a JSON line."""
    prefix = email_prefix.lower()
    async with _pool(settings) as pool:
        cursor = None
        while True:
            page, cursor = await admin.list_users(
                pool, email_prefix=prefix, cursor=cursor, limit=pagination.MAX_PAGE_SIZE
            )
            for user in page:
                print(json.dumps(user.to_json()))
            if cursor is None:
                return 0


async def enable_user(settings: Settings, email: str) -> int:
    """Enable the user with `email` again: they can log in; their ended sessions stay ended."""
    async with _pool(settings) as pool:
        try:
            user_id = await admin.user_id_of(pool, _stored_form(email))
            await admin.set_disabled(
                pool, user_id, disabled=False, actor=audit.CLI_ACTOR, now=utc_now()
            )
        except ServiceError as error:
            return _refused(error.description)
    print("user enabled")
    return 0


async def delete_user(settings: Settings, email: str) -> int:
    """Erase the user with `email` and everything that references them."""
    async with _pool(settings) as pool:
        try:
            user_id = await admin.user_id_of(pool, _stored_form(email))
            await admin.erase_user(pool, user_id, actor=audit.CLI_ACTOR, now=utc_now())
        except ServiceError as error:
            return _refused(error.description)
    print(f"user {user_id} erased")
    return 0


async def create_resource(
    settings: Settings, uri: str, name: str, scope: str, ttl: int | None
) -> int:
    """Register a resource; prints it as one JSON line."""
    body: dict[str, object] = {"uri": uri, "name": name, "scopes": scope.split()}
    if ttl is not None:
        body["access_token_ttl"] = ttl
    try:
        fields = resources.check_resource_fields(body, settings, creating=True)
        async with _pool(settings) as pool:
            created = await resources.create_resource(
                pool, fields, actor=audit.CLI_ACTOR, now=utc_now()
            )
    except ServiceError as error:
        return _refused(error.description)
    print(json.dumps(created.to_json()))
    return 0


async def list_resources(settings: Settings) -> int:
    """Print every resource as a JSON line."""
    async with _pool(settings) as pool:
        for resource in await resources.list_resources(pool):
            print(json.dumps(resource.to_json()))
    return 0


async def delete_resource(settings: Settings, uri: str) -> int:
    """Delete the resource with `uri` and every client's grant to it."""
    async with _pool(settings) as pool:
        try:
            async with pool.acquire() as connection:
                found = await resources_table.find_by_uri(connection, uri)
            if found is None:
                return _refused("no resource has this URI")
            await resources.delete_resource(pool, found.id, actor=audit.CLI_ACTOR, now=utc_now())
        except ServiceError as error:
            return _refused(error.description)
    print(f"resource {found.id} deleted")
    return 0


async def change_client_resource(
    settings: Settings, client_id: str, uri: str, kind: str, scope: str, *, grant: bool
) -> int:
    """Grant a client a kind of use of a resource, or take it back."""
    async with _pool(settings) as pool:
        try:
            if grant:
                granted = await resources.grant_client(
                    pool,
                    client_id=client_id,
                    resource=uri,
                    kind=GrantKind(kind),
                    scopes=roles.check_scopes(scope.split()),
                    actor=audit.CLI_ACTOR,
                    now=utc_now(),
                )
                print(json.dumps(granted.to_json()))
            else:
                await resources.revoke_client_grant(
                    pool,
                    client_id=client_id,
                    resource=uri,
                    kind=GrantKind(kind),
                    actor=audit.CLI_ACTOR,
                    now=utc_now(),
                )
                print("grant revoked")
        except ServiceError as error:
            return _refused(error.description)
    return 0


async def list_client_resources(settings: Settings, client_id: str) -> int:
    """Print every grant of the client as a JSON line."""
    async with _pool(settings) as pool:
        try:
            found = await resources.list_client_grants(pool, client_id)
        except ServiceError as error:
            return _refused(error.description)
    for grant in found:
        print(json.dumps(grant.to_json()))
    return 0


def _stored_form(email: str) -> str:
    """The form in which `email` would be stored, to find its user by (the domain in any
    spelling); an email that is not one mailbox as typed, to find an account stored before
    the rule (migration 0010 flagged those)."""
    try:
        return normalize_email(email)
    except InvalidInput:
        return email


async def _register(settings: Settings, email: str, password: str) -> User:
    # Imported by the two commands that hash: the others load neither argon2 nor JOSE.
    from tokenrota_server.auth import Authenticator
    from tokenrota_server.passwords import Passwords
    from tokenrota_server.tokens import TokenCodec

    passwords = Passwords(settings)
    try:
        async with _pool(settings) as pool:
            auth = Authenticator(settings, TokenCodec(settings), passwords)
            return await auth.create_user(pool, email=email, password=password, now=utc_now())
    finally:
        passwords.close()


@contextlib.asynccontextmanager
async def _pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url is not None
    pool = await create_pool(
        settings.database_url,
        min_size=1,
        max_size=1,
        pooler=settings.database_pooler,
        connect_timeout=settings.database_connect_timeout,
    )
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _pool_and_passwords(
    settings: Settings,
) -> AsyncIterator[tuple[asyncpg.Pool, Passwords]]:
    from tokenrota_server.passwords import Passwords

    passwords = Passwords(settings)
    try:
        async with _pool(settings) as pool:
            yield pool, passwords
    finally:
        passwords.close()


def _refused(reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr)
    return 1
