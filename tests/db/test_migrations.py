"""The alembic migrations on a fresh database: up, down to base, and up again, step by step.

alembic's env.py calls `asyncio.run`, so these tests are synchronous and migrate from outside
any event loop, as the CLI does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from tokenrota.testing import database_url_for, execute
from tokenrota_server.db import schema

CORE_TABLES = {"users", "sessions", "refresh_tokens", "clients"}


@pytest.fixture
def empty_database(postgres_url: str) -> Iterator[str]:
    """A brand-new database with no tables at all."""
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(postgres_url, f'CREATE DATABASE "{name}"'))
    yield database_url_for(postgres_url, name)
    asyncio.run(execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _schema_of(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        columns = await connection.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public'"
        )
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
        constraints = await connection.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace"
        )
        revision = await schema.current_revision(connection)
    finally:
        await connection.close()
    return {
        "tables": {row["table_name"] for row in tables} - {"alembic_version"},
        "columns": {tuple(row) for row in columns if row["table_name"] != "alembic_version"},
        "indexes": {tuple(row) for row in indexes if row["indexname"] != "alembic_version_pkc"},
        "constraints": {
            tuple(row) for row in constraints if not row["conname"].startswith("alembic_version")
        },
        "revision": revision,
    }


def schema_of(url: str) -> dict[str, Any]:
    return asyncio.run(_schema_of(url))


def revisions_base_to_head() -> list[str]:
    script = ScriptDirectory.from_config(schema.alembic_config(""))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def test_the_chain_read_from_the_scripts_is_alembics() -> None:
    """The revisions, what each follows and the head, read from the scripts' source without
    alembic (what the CLI and /readyz use), are exactly what alembic makes of them."""
    script = ScriptDirectory.from_config(schema.alembic_config(""))

    assert schema.revisions() == {
        revision.revision: revision.down_revision for revision in script.walk_revisions()
    }
    assert [schema.head_revision()] == script.get_heads()


@pytest.mark.parametrize(
    "source",
    [
        'revision = "0002"\ndown_revision = "0001"\n',
        'revision: str = "0002"\ndown_revision: Union[str, None] = "0001"\n',
        '"""0002."""\nrevision_note = "x"\nrevision = "0002"\ndown_revision = "0001"\n',
        'def upgrade():\n    revision = "9"\n\nrevision = "0002"\ndown_revision = "0001"\n',
        'revision = (\n    "0002"\n)\ndown_revision = "0001"\n',
    ],
    ids=["plain", "annotated", "other-names", "indented", "over-lines"],
)
def test_a_scripts_place_in_the_chain_is_read_from_its_top_level_lines(source: str) -> None:
    assert schema.place_in_chain(source, "0002_x.py") == ("0002", "0001")


def test_a_merge_is_refused_naming_the_script() -> None:
    with pytest.raises(ValueError, match=r"0003_merge\.py: revision and down_revision must be"):
        schema.place_in_chain(
            'revision = "0003"\ndown_revision = ("0001", "0002")\n', "0003_merge.py"
        )


def test_checking_the_head_imports_neither_alembic_nor_sqlalchemy() -> None:
    """An operator command and each /readyz tell the head without alembic's half second."""
    script = (
        "import sys; from tokenrota_server.db import schema; schema.head_revision(); "
        "print(*sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'sqlalchemy')))"
    )

    loaded = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()

    assert loaded == []


def test_upgrade_head_downgrade_base_upgrade_head(empty_database: str) -> None:
    """The full round trip leaves exactly the schema the first upgrade made."""
    assert schema_of(empty_database)["tables"] == set()

    schema.upgrade(empty_database)
    first = schema_of(empty_database)
    schema.downgrade(empty_database, "base")
    emptied = schema_of(empty_database)
    schema.upgrade(empty_database)
    second = schema_of(empty_database)

    assert first["tables"] >= CORE_TABLES
    assert first["revision"] == schema.head_revision()
    assert emptied["tables"] == set()
    assert emptied["indexes"] == set()
    assert emptied["revision"] is None
    assert second == first


def test_each_migration_downgrades_to_exactly_the_schema_before_it(empty_database: str) -> None:
    """Step by step: every downgrade undoes its own upgrade and nothing else."""
    revisions = revisions_base_to_head()
    assert revisions[:2] == ["0001", "0002"]
    states = [schema_of(empty_database)]

    for revision in revisions:
        schema.upgrade(empty_database, revision)
        state = schema_of(empty_database)
        assert state["revision"] == revision
        assert state != states[-1], f"{revision} changed nothing"
        states.append(state)
    for revision, before in zip(reversed(revisions), reversed(states[:-1]), strict=True):
        schema.downgrade(empty_database, "-1")
        after = schema_of(empty_database)
        assert {k: v for k, v in after.items() if k != "revision"} == {
            k: v for k, v in before.items() if k != "revision"
        }, f"downgrade of {revision} left a difference"


@pytest.mark.parametrize(
    ("revision", "previous", "tables"),
    [
        ("0001", "base", {"users", "sessions", "refresh_tokens"}),
        ("0002", "0001", {"clients", "revoked_access_tokens"}),
        ("0003", "0002", {"login_attempts"}),
    ],
)
def test_each_migration_makes_the_tables_it_names_and_its_downgrade_drops_them(
    empty_database: str, revision: str, previous: str, tables: set[str]
) -> None:
    if previous != "base":
        schema.upgrade(empty_database, previous)
    assert not tables & schema_of(empty_database)["tables"]

    schema.upgrade(empty_database, revision)
    assert tables <= schema_of(empty_database)["tables"]

    schema.downgrade(empty_database, previous)
    assert not tables & schema_of(empty_database)["tables"]


def test_the_schema_keeps_no_refresh_token_column(empty_database: str) -> None:
    """Only digests are stored: no column could hold a raw token."""
    schema.upgrade(empty_database)
    columns = {(table, column) for table, column, *_ in schema_of(empty_database)["columns"]}

    assert ("refresh_tokens", "token_digest") in columns
    assert not any(
        column in ("token", "refresh_token", "raw_token", "password") for _, column in columns
    )


async def _insert_counters(url: str, scopes: list[str]) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.executemany(
            "INSERT INTO login_attempts (scope, key_digest, attempts, window_started_at)"
            " VALUES ($1, $2, 1, now())",
            [(scope, bytes([n]) * 32) for n, scope in enumerate(scopes)],
        )
    finally:
        await connection.close()


async def _scopes(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT scope FROM login_attempts ORDER BY scope")
    finally:
        await connection.close()
    return [row["scope"] for row in rows]


def test_0004_admits_register_counters_and_its_downgrade_deletes_only_them(
    empty_database: str,
) -> None:
    """Down to 0003 with registration counters in the table works, and keeps the login ones."""
    schema.upgrade(empty_database, "0003")
    with pytest.raises(asyncpg.CheckViolationError):
        asyncio.run(_insert_counters(empty_database, ["register_ip"]))

    schema.upgrade(empty_database, "0004")
    asyncio.run(_insert_counters(empty_database, ["email", "ip", "register_ip"]))
    schema.downgrade(empty_database, "0003")

    assert asyncio.run(_scopes(empty_database)) == ["email", "ip"]
    schema.upgrade(empty_database, "0004")
    assert schema_of(empty_database)["revision"] == "0004"


async def _arrange_0005(url: str) -> None:
    """A user with a reset token, a queued message, a session a reset ended, forgot counters."""
    connection = await asyncpg.connect(url)
    try:
        user_id = await connection.fetchval(
            "INSERT INTO users (email, password_hash, email_verified_at)"
            " VALUES ('a@example.com', 'h', now()) RETURNING id"
        )
        await connection.execute(
            "INSERT INTO account_tokens (token_digest, purpose, user_id, created_at, expires_at)"
            " VALUES ($1, 'password_reset', $2, now(), now() + interval '1 hour')",
            b"\x01" * 32,
            user_id,
        )
        await connection.execute(
            "INSERT INTO mail_outbox (user_id, recipient, subject, text_body, html_body,"
            " created_at, next_attempt_at)"
            " VALUES ($1, 'a@example.com', 's', 't', 'h', now(), now())",
            user_id,
        )
        await connection.execute(
            "INSERT INTO sessions (user_id, expires_at, revoked_at, revoke_reason)"
            " VALUES ($1, now() + interval '1 day', now(), 'password_reset')",
            user_id,
        )
    finally:
        await connection.close()
    await _insert_counters(url, ["email", "forgot_email", "forgot_ip"])


async def _after_erasing_the_user(url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DELETE FROM users")
        tokens = await connection.fetchval("SELECT count(*) FROM account_tokens")
        mail = await connection.fetchval("SELECT count(*) FROM mail_outbox")
    finally:
        await connection.close()
    return tokens, mail


async def _revoke_reasons(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT revoke_reason FROM sessions")
    finally:
        await connection.close()
    return [row["revoke_reason"] for row in rows]


def test_0005_adds_account_mail_and_its_downgrade_keeps_what_the_older_schema_can_hold(
    empty_database: str,
) -> None:
    """Up: tokens, outbox, email_verified_at, the new reason and scopes. Down with such rows in
    the tables: the forgot counters go, a reset session stays revoked (as a password change)."""
    schema.upgrade(empty_database, "0005")
    asyncio.run(_arrange_0005(empty_database))

    schema.downgrade(empty_database, "0004")

    after = schema_of(empty_database)
    assert after["revision"] == "0004"
    assert {"account_tokens", "mail_outbox"} & after["tables"] == set()
    assert not any(column[1] == "email_verified_at" for column in after["columns"])
    assert asyncio.run(_scopes(empty_database)) == ["email"]
    assert asyncio.run(_revoke_reasons(empty_database)) == ["password_change"]
    schema.upgrade(empty_database, "0005")
    assert schema_of(empty_database)["revision"] == "0005"


def test_0005_erasing_a_user_erases_their_tokens_and_messages(empty_database: str) -> None:
    """ON DELETE CASCADE: an erased user leaves no reset token and no queued message behind."""
    schema.upgrade(empty_database, "0005")
    asyncio.run(_arrange_0005(empty_database))

    assert asyncio.run(_after_erasing_the_user(empty_database)) == (0, 0)


# Stored before emails had to be one mailbox; each names other or more recipients.
NOT_MAILBOXES = [
    "x,victim@corp.test",
    "Victim<atk@evil.test>",
    "atk(victim@corp.test)@evil.test",
    "=?utf-8?q?victim=40corp.test?=@evil.test",
    '"a b"@example.com',
    "a@127.0.0.1",
    "a@localhost",
]
MAILBOXES = ["ada@example.com", "Bob.O'Neil+x@Mail.Example.COM", "{x}|~@sub.example.co.uk"]


async def _arrange_0010(url: str) -> None:
    """Each email with a live session, an open reset token and an unsent message."""
    connection = await asyncpg.connect(url)
    try:
        for number, email in enumerate(NOT_MAILBOXES + MAILBOXES):
            user_id = await connection.fetchval(
                "INSERT INTO users (email, password_hash) VALUES ($1, 'h') RETURNING id", email
            )
            await connection.execute(
                "INSERT INTO sessions (user_id, expires_at) VALUES ($1, now() + interval '1 day')",
                user_id,
            )
            await connection.execute(
                "INSERT INTO account_tokens (token_digest, purpose, user_id, created_at,"
                " expires_at) VALUES ($1, 'password_reset', $2, now(), now() + interval '1 hour')",
                bytes([number]) * 32,
                user_id,
            )
            await connection.execute(
                "INSERT INTO mail_outbox (user_id, recipient, subject, text_body, html_body,"
                " created_at, next_attempt_at) VALUES ($1, $2, 's', 't', 'h', now(), now())",
                user_id,
                email,
            )
    finally:
        await connection.close()


async def _state_by_email(url: str) -> dict[str, tuple[Any, ...]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT u.email, u.disabled_at IS NOT NULL AS disabled,"
            " bool_and(s.revoked_at IS NOT NULL) AS sessions_ended,"
            " bool_and(t.superseded_at IS NOT NULL) AS tokens_void,"
            " bool_and(m.next_attempt_at IS NULL AND m.text_body = '') AS mail_given_up,"
            " (SELECT count(*) FROM audit_events a WHERE a.user_id = u.id"
            "  AND a.actor = 'migration:0010') AS events"
            " FROM users u JOIN sessions s ON s.user_id = u.id"
            " JOIN account_tokens t ON t.user_id = u.id JOIN mail_outbox m ON m.user_id = u.id"
            " GROUP BY u.id"
        )
    finally:
        await connection.close()
    return {row["email"]: tuple(row)[1:] for row in rows}


def test_0010_disables_accounts_whose_email_is_not_one_mailbox_and_rewrites_none(
    empty_database: str,
) -> None:
    """Each such account is flagged, disabled, its sessions ended, its tokens voided, its
    unsent mail given up, with one audit event; the others are untouched; no email changes.
    The downgrade drops the flag and keeps them disabled."""
    schema.upgrade(empty_database, "0009")
    asyncio.run(_arrange_0010(empty_database))

    schema.upgrade(empty_database, "0010")
    state = asyncio.run(_state_by_email(empty_database))
    schema.downgrade(empty_database, "0009")
    after_downgrade = asyncio.run(_state_by_email(empty_database))

    assert set(state) == set(NOT_MAILBOXES + MAILBOXES)
    for email in NOT_MAILBOXES:
        assert state[email] == (True, True, True, True, 1), email
    for email in MAILBOXES:
        assert state[email] == (False, False, False, False, 0), email
    assert {email: row[0] for email, row in after_downgrade.items()} == {
        email: email in NOT_MAILBOXES for email in NOT_MAILBOXES + MAILBOXES
    }
    assert not any(
        column[1] == "email_flagged_at" for column in schema_of(empty_database)["columns"]
    )
