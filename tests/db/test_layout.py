"""The layout holds: every SQL statement of the server lives in `tokenrota_server/db/`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tokenrota_server

SERVER = Path(tokenrota_server.__file__).parent
# Where SQL belongs: the table modules, and alembic's revisions.
SQL_HOMES = {"db", "migrations"}

# Our statements are written in upper case: a statement's keyword first, or a clause's inside;
# the case-blind shapes (a parameter, a pg_ function, a row lock) catch one that is not.
LOOKS_LIKE_SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|LISTEN|NOTIFY|UNLISTEN|ALTER|CREATE|DROP|TRUNCATE"
    r"|COPY|VACUUM|ANALYZE|LOCK|SET|RESET|SHOW|DO|CALL|EXPLAIN)\s+\S"
    r"|\b(FROM|WHERE|JOIN|RETURNING|VALUES|INTO)\s+\S"
    r"|(?i:\$[0-9]+\b|\bpg_\w+\s*\(|\bfor\s+(update|share)\b|\bon\s+conflict\b)",
)


def sql_constants(source: str) -> list[tuple[int, str]]:
    """The string constants of `source` that look like SQL, with their line; docstrings
    (which may name a statement to explain it) are not code and are passed over."""
    tree = ast.parse(source)
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found = {
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and LOOKS_LIKE_SQL.search(node.value)
    }
    return sorted(found)


def sql_outside_db(root: Path) -> list[str]:
    """`path:line: statement` for every SQL-looking constant below `root` outside its SQL homes."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in SQL_HOMES:
            continue
        for line, text in sql_constants(path.read_text()):
            found.append(f"{relative}:{line}: {text[:60]}")
    return found


def test_no_module_outside_db_holds_sql() -> None:
    """Routes, use cases and the command line leave every statement to the modules of `db/`."""
    assert sql_outside_db(SERVER) == []


def test_the_check_finds_sql_and_passes_over_prose(tmp_path: Path) -> None:
    """The check sees a statement however it is written, and not an HTTP method or a sentence."""
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "users.py").write_text('Q = "SELECT 1 FROM users"\n')
    (tmp_path / "use_case.py").write_text(
        '"""Takes the row with SELECT ... FOR UPDATE SKIP LOCKED."""\n'
        'METHODS = ["DELETE", "POST"]\n'
        'HINT = "Select a role from the list, then delete from it what you want."\n'
        "async def f(connection, table, user_id):\n"
        '    await connection.fetchval("SELECT 1 FROM users WHERE id = $1", user_id)\n'
        '    await connection.execute(f"delete from {table} where id = $1", user_id)\n'
        '    await connection.execute("UPDATE users SET disabled_at = now()"\n'
        '                             " WHERE id = $1", user_id)\n'
        "    await connection.execute(\"select pg_notify('x', '')\")\n"
    )

    found = sql_outside_db(tmp_path)

    assert [each.split(":")[1] for each in found] == ["5", "6", "7", "9"]


def test_the_check_recognises_every_table_module() -> None:
    """Each table module of `db/` holds statements the check recognises: it would see them
    anywhere else."""
    table_modules = ["account_tokens", "audit", "feed", "oauth_clients", "outbox", "purge"]
    table_modules += ["roles", "sessions", "throttle", "users"]

    unseen = [
        name
        for name in table_modules
        if not sql_constants((SERVER / "db" / f"{name}.py").read_text())
    ]

    assert unseen == []


def test_the_module_map_names_every_server_module_in_its_wing() -> None:
    """docs/architecture.md's module map has one row per module of the server, in its wing."""
    text = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named, wing = set(), None
    for line in section.splitlines():
        if not line.startswith("|"):
            heading = re.match(r"`(http|db|cli)/`", line)
            if heading or line.startswith(("The use cases", "The library")):
                wing = heading.group(1) + "/" if heading else "" if "use cases" in line else None
            continue
        if wing is not None:
            named |= {f"{wing}{name}.py" for name in re.findall(r"`(\w+)\.py`", line.split("|")[1])}
    modules = {
        path.relative_to(SERVER).as_posix()
        for path in SERVER.rglob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
        and path.relative_to(SERVER).parts[0] not in SQL_HOMES - {"db"}
    }

    assert named == modules
