"""The documentation's examples run as written, and its links lead somewhere inside the repository.

How a page marks its examples (an HTML comment on the line before a fenced block; see
docs/README.md, "How the examples are checked"):

    <!-- docs-test: sh -->           the block runs, in page order, in one bash session per page
    <!-- docs-test: file NAME -->    the block is written to NAME in that session's directory
    <!-- docs-test: serve NAME -->   a Python block written to NAME; its `app` is served

In the examples the token service is http://127.0.0.1:8000 and the served example apps
http://127.0.0.1:8001 and (a page's second) http://127.0.0.1:8002; the test replaces them with
the real addresses (a `token_service` instance and a uvicorn thread per app), in the commands,
the files and what the commands are said to answer. A comment line `# → ...` after a command
says what it answers and is checked: an HTTP status (of the command's last curl call), then the
error code, or a JSON body whose keys must match (values too, except where the example's value
is a timestamp, id, token or secret, or holds an ellipsis, and except numbers of 10 digits or
more). Without a status, the JSON or text is looked for in what the command printed. Text after
` — ` is commentary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.datastructures import Secret
from starlette.routing import Route
from tokenrota.testing import TokenService, instance_settings
from tokenrota_server import errors
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose examples must be checked: a page that loses its markers fails instead of passing.
PAGES_WITH_EXAMPLES = [
    "README.md",
    "docs/accounts.md",
    "docs/admin.md",
    "docs/api.md",
    "docs/services.md",
    "docs/testing.md",
]
README_LIMIT_BYTES = 10 * 1024

SERVICE_URL = "http://127.0.0.1:8000"
APP_URL = "http://127.0.0.1:8001"
# Where a page's served apps are, in the order the page serves them.
APP_URLS = (APP_URL, "http://127.0.0.1:8002")
# Links may leave the repository only for standards (RFCs) and the reader's own local instance.
ALLOWED_LINK_HOSTS = {"datatracker.ietf.org", "www.rfc-editor.org", "127.0.0.1", "localhost"}

MARKER = re.compile(r"<!-- docs-test: (?P<kind>sh|file|serve)(?: (?P<name>[\w.\-/]+))? -->")
EXPECTATION = re.compile(r"# → (?:(?P<status>\d{3})\b)?\s*(?P<rest>.*?)\s*(?:— .*)?$")
# Values an example cannot reproduce: they differ on every run.
VARYING = [
    re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)"),  # a timestamp
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),  # a UUID
    re.compile(r"[0-9a-f]{16,}"),  # a client id
    # A token, secret or jti: random text has a digit or a capital; an error code has neither.
    re.compile(r"(?=[^.]*[A-Z0-9])[A-Za-z0-9_\-]{16,}(\.[A-Za-z0-9_\-]+){0,2}"),
]
STEP_MARK = re.compile(r"\n?@@docs-step (\d+)@@\n")
BEARER_CODES = {"missing_token", "invalid_token", "token_expired", "insufficient_scope"}

# Defined before the page's commands: curl keeps what it printed and its response headers.
PRELUDE = r"""
curl() {
  local body; body=$(mktemp "$DOCS_DIR/.call.XXXXXX")
  command curl -D "$body.head" "$@" | tee "$body"
  local code=${PIPESTATUS[0]}
  printf 'call %s\n' "$body" >> "$DOCS_DIR/.calls"
  return "$code"
}
docs_step() { printf '\n@@docs-step %s@@\n' "$1"; printf 'step %s\n' "$1" >> "$DOCS_DIR/.calls"; }
"""


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced block that a marker asks to check."""

    page: Path
    line: int
    kind: str
    name: str | None
    text: str


@dataclasses.dataclass
class Expectation:
    line: int
    status: int | None
    body: Any = None  # parsed JSON
    code: str | None = None  # an error code
    text: str | None = None  # printed text


@dataclasses.dataclass
class Step:
    """One command of an sh block, with what the page says it answers."""

    line: int
    command: str
    expectations: list[Expectation] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Call:
    status: int
    headers: dict[str, str]
    output: str


def relative(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def prose_lines(page: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, inside a fenced block) for each line of `page`."""
    fence: str | None = None
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        stripped = line.strip()
        opening = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and opening:
            fence = opening.group(1)
            yield number, line, True
        elif fence is not None:
            if stripped == fence:
                fence = None
            yield number, line, True
        else:
            yield number, line, False


def blocks_of(page: Path) -> list[Block]:
    """The marked blocks of `page`; a marker must be followed by a fenced block."""
    found: list[Block] = []
    pending: tuple[int, str, str | None] | None = None
    body: list[str] | None = None
    for number, line, fenced in prose_lines(page):
        if body is not None:
            if fenced and not re.match(r"\s*(`{3,}|~{3,})\s*$", line):
                body.append(line)
                continue
            assert pending is not None
            found.append(Block(page, pending[0], pending[1], pending[2], "\n".join(body) + "\n"))
            pending, body = None, None
            continue
        if fenced:
            if pending is not None:
                body = []
            continue
        marker = MARKER.fullmatch(line.strip())
        if marker:
            pending = (number, marker["kind"], marker["name"])
        elif pending is not None and line.strip():
            raise AssertionError(f"{relative(page)}:{pending[0]}: a marker without a block")
    assert pending is None, f"{relative(page)}:{pending[0]}: a marker without a block"
    return found


def parse_expectation(where: str, line: int, raw: str) -> Expectation:
    match = EXPECTATION.match(raw)
    assert match, f"{where}:{line}: cannot read {raw!r}"
    status = int(match["status"]) if match["status"] else None
    rest = match["rest"]
    expectation = Expectation(line, status)
    if rest[:1] in ("{", "["):
        expectation.body = json.loads(rest)
    elif status is not None and re.fullmatch(r"[a-z_]+", rest):
        expectation.code = rest
    elif status is None and rest:
        expectation.text = rest
    elif rest:
        raise AssertionError(f"{where}:{line}: after a status, only JSON, a code or ' — text'")
    return expectation


def steps_of(block: Block) -> list[Step]:
    """The commands of an sh block, each with the `# → ` lines that follow it."""
    where = relative(block.page)
    steps: list[Step] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        line, number = lines[index], block.line + 2 + index
        index += 1
        if line.startswith("# → "):
            assert steps, f"{where}:{number}: an expectation before any command"
            # Long JSON may continue on comment lines indented by three spaces.
            while index < len(lines) and lines[index].startswith("#   "):
                line += " " + lines[index][4:].strip()
                index += 1
            steps[-1].expectations.append(parse_expectation(where, number, line))
        elif line.strip() and not line.lstrip().startswith("#"):
            command = [line]
            while command[-1].endswith("\\") and index < len(lines):
                command.append(lines[index])
                index += 1
            steps.append(Step(number, "\n".join(command)))
    return steps


def substitute(text: str, addresses: dict[str, str]) -> str:
    for documented, real in addresses.items():
        text = text.replace(documented, real)
    return text


def matches(expected: Any, actual: Any) -> bool:
    """Whether `actual` has the shape of `expected` (see the module docstring)."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list):
        # In any order: items listed in the same second (sessions) come in either order.
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and any(
                all(matches(e, a) for e, a in zip(expected, order, strict=True))
                for order in (itertools.permutations(actual) if len(actual) <= 6 else [actual])
            )
        )
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return False
        if "…" in expected or "..." in expected:
            return True
        if any(p.fullmatch(expected) and p.fullmatch(actual) for p in VARYING):
            return True
        return expected == actual
    if isinstance(expected, bool) or expected is None:
        return expected is actual
    if isinstance(expected, int) and expected >= 10**9:
        return isinstance(actual, int) and not isinstance(actual, bool)
    return bool(expected == actual)


def read_call(path: str) -> Call:
    head = Path(path + ".head").read_text(errors="replace") if Path(path + ".head").exists() else ""
    statuses = [line.split()[1] for line in head.splitlines() if line.startswith("HTTP/")]
    headers = {}
    for line in head.splitlines()[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    output = Path(path).read_text(errors="replace")
    if output.startswith("HTTP/"):  # curl -i: the headers come first (newlines read as \n)
        output = output.partition("\n\n")[2]
    return Call(int(statuses[-1]) if statuses else 0, headers, output)


def first_json(text: str) -> Any:
    try:
        return json.JSONDecoder().raw_decode(text.strip())[0]
    except ValueError:
        return None


def shorten(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_step(where: str, step: Step, calls: list[Call], printed: str) -> list[str]:
    """What differs between the page's expectations of `step` and what it did."""
    problems = []
    for expected in step.expectations:
        place = f"{where}:{expected.line}"
        call = calls[-1] if calls else None
        if expected.status is not None:
            if call is None:
                problems.append(f"{place}: a status is expected but no curl call was made")
                continue
            if call.status != expected.status:
                problems.append(
                    f"{place}: status {call.status}, not {expected.status}: {shorten(call.output)}"
                )
        answered = first_json(call.output) if call is not None else first_json(printed)
        if expected.code is not None:
            code = answered.get("error") if isinstance(answered, dict) else None
            if code != expected.code:
                problems.append(f"{place}: error {code!r}, not {expected.code!r}")
            challenge = call.headers.get("www-authenticate", "") if call else ""
            if expected.code in BEARER_CODES and not challenge.startswith("Bearer"):
                problems.append(f"{place}: no WWW-Authenticate: Bearer ({challenge!r})")
        if expected.body is not None and not matches(expected.body, answered):
            problems.append(f"{place}: answered {shorten(answered)}, not like {expected.body!r}")
        if expected.text is not None and expected.text not in printed:
            problems.append(f"{place}: {expected.text!r} not in the output {printed[-2000:]!r}")
    return problems


@contextlib.asynccontextmanager
async def serving(app: Any, listener: socket.socket) -> AsyncIterator[None]:
    """Serve `app` on `listener` with uvicorn, in a thread of its own, until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the example app did not start"
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        listener.close()


def load_app(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def pages_with_blocks() -> list[str]:
    return [relative(page) for page in PAGES if blocks_of(page)]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key_pem() -> str:
    """An ES256 key: the pages' examples run against a service that publishes its JWKS."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@pytest.fixture
def token_service_settings(signing_key_pem: str, tmp_path_factory: Any) -> dict[str, Any]:
    """The documented service, signing its access tokens with an ES256 key, with a development
    mailbox of its own (a page reads the messages it caused, never an earlier run's)."""
    return {
        "access_token_signing_key": Secret(signing_key_pem),
        "data_dir": tmp_path_factory.mktemp("docs-data"),
    }


# -- the examples run -----------------------------------------------------------------------


def test_the_pages_that_must_have_checked_examples_have_them() -> None:
    """README's tour and the service and test guides' examples are marked, so they run."""
    assert set(PAGES_WITH_EXAMPLES) <= set(pages_with_blocks())


@pytest.mark.parametrize("page", pages_with_blocks())
async def test_a_pages_examples_answer_as_written(
    page: str,
    token_service: TokenService,
    token_service_postgres_url: str,
    signing_key_pem: str,
    tmp_path: Path,
) -> None:
    """Each marked block of `page` runs against a real service and answers what the page says."""
    blocks = blocks_of(ROOT / page)
    steps = [(block, step) for block in blocks if block.kind == "sh" for step in steps_of(block)]
    key_file = tmp_path / ".signing-key.pem"
    key_file.write_text(signing_key_pem)
    environment = session_environment(token_service, token_service_postgres_url, key_file)
    environment["DOCS_DIR"] = str(tmp_path)

    with contextlib.ExitStack() as sockets:
        listeners = []
        for _ in APP_URLS:
            listener = sockets.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            listener.bind(("127.0.0.1", 0))
            listeners.append(listener)
        addresses = {SERVICE_URL: token_service.base_url} | {
            documented: f"http://127.0.0.1:{listener.getsockname()[1]}"
            for documented, listener in zip(APP_URLS, listeners, strict=True)
        }
        served = write_files(blocks, addresses, tmp_path)
        script = [PRELUDE]
        for number, (_, step) in enumerate(steps):
            script += [substitute(step.command, addresses), f"docs_step {number}"]
        (tmp_path / ".docs.sh").write_text("\n".join(script) + "\n")
        async with contextlib.AsyncExitStack() as stack:
            for path, listener in zip(served, listeners, strict=False):
                await stack.enter_async_context(serving(load_app(path), listener))
            run = await asyncio.to_thread(
                subprocess.run,
                ["bash", str(tmp_path / ".docs.sh")],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )

    printed, calls = what_each_step_did(run.stdout, tmp_path / ".calls", len(steps))
    problems = []
    for number, (block, step) in enumerate(steps):
        expected = dataclasses.replace(
            step,
            expectations=[substituted(expectation, addresses) for expectation in step.expectations],
        )
        problems += check_step(relative(block.page), expected, calls[number], printed[number])
    assert not problems, "\n".join([*problems, "stderr:", run.stderr[-3000:]])


def session_environment(service: TokenService, postgres_url: str, key_file: Path) -> dict[str, str]:
    """The environment of a page's bash session: the CLI works on `service`'s database."""
    settings = service.settings
    return {
        **os.environ,
        # `tokenrota` and `python` are this environment's, as in an activated virtualenv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ENV": "test",
        "DATABASE_URL": service.database_url,
        "DATA_DIR": str(key_file.parent / ".data"),
        "ACCESS_TOKEN_SECRET": str(settings.access_token_secret),
        "REFRESH_TOKEN_SECRET": str(settings.refresh_token_secret),
        "ACCESS_TOKEN_SIGNING_KEY": str(key_file),
        "ARGON2_TIME_COST": str(settings.argon2_time_cost),
        "ARGON2_MEMORY_COST": str(settings.argon2_memory_cost),
        "ARGON2_PARALLELISM": str(settings.argon2_parallelism),
        # A test suite in an example uses this run's Postgres server, not one of its own.
        "TEST_DATABASE_URL": postgres_url,
    }


def substituted(expectation: Expectation, addresses: dict[str, str]) -> Expectation:
    """`expectation` with the documented addresses replaced by the real ones."""
    body = expectation.body
    if body is not None:
        body = json.loads(substitute(json.dumps(body), addresses))
    text = None if expectation.text is None else substitute(expectation.text, addresses)
    return dataclasses.replace(expectation, body=body, text=text)


def write_files(blocks: list[Block], addresses: dict[str, str], folder: Path) -> list[Path]:
    """Write the file and serve blocks into `folder`; the ones to serve, in page order."""
    served = []
    for block in blocks:
        if block.kind in ("file", "serve"):
            assert block.name, f"{relative(block.page)}:{block.line}: a file needs a name"
            target = folder / block.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(substitute(block.text, addresses))
            if block.kind == "serve":
                served.append(target)
    assert len(served) <= len(APP_URLS), f"at most {len(APP_URLS)} served apps per page"
    return served


def what_each_step_did(
    stdout: str, calls_log: Path, count: int
) -> tuple[dict[int, str], dict[int, list[Call]]]:
    """Per step: what it printed, and the curl calls it made (from the session's own log)."""
    printed = dict.fromkeys(range(count), "")
    pieces = STEP_MARK.split(stdout)
    for index in range(1, len(pieces) - 1, 2):
        printed[int(pieces[index])] = pieces[index - 1]
    calls: dict[int, list[Call]] = {number: [] for number in range(count)}
    current: list[Call] = []
    for entry in calls_log.read_text().splitlines() if calls_log.exists() else []:
        kind, _, value = entry.partition(" ")
        if kind == "call":
            current.append(read_call(value))
        else:
            calls[int(value)], current = current, []
    return printed, calls


@pytest.mark.parametrize(
    ("expected", "actual", "alike"),
    [
        ({"error": "invalid_credentials"}, {"error": "too_many_attempts"}, False),
        (
            {"id": "2224846a-…", "n": 900},
            {"id": "a1c661d2-b6ee-45f6-a358-0bba749602ce", "n": 900},
            True,
        ),
        ({"n": 900}, {"n": 60}, False),
        ({"active": False}, {"active": False, "scope": ""}, False),
        ({"iat": 1795779542}, {"iat": 1795991554}, True),
        ({"jti": "p8VM7-gefXruTqQAgHwtwQ"}, {"jti": "fwvfGW8dwdNHrhsp0uZM_A"}, True),
        ({"at": "2026-11-27T11:38:38+00:00"}, {"at": "yesterday"}, False),
        ([{"a": "x"}, {"a": "y"}], [{"a": "y"}, {"a": "x"}], True),
        ([{"a": "x"}, {"a": "y"}], [{"a": "x"}, {"a": "x"}], False),
    ],
)
def test_answers_are_compared_by_shape_and_fixed_values(
    expected: Any, actual: Any, alike: bool
) -> None:
    """Only values that change on every run are free; codes, counts and flags must match."""
    assert matches(expected, actual) is alike


def test_expected_answers_name_the_real_addresses() -> None:
    """A served app's documented address in an expected answer is its real one, so a resource
    URI can be checked exactly: in JSON bodies and in printed text."""
    addresses = {APP_URL: "http://127.0.0.1:40001", APP_URLS[1]: "http://127.0.0.1:40002"}
    body = Expectation(1, 200, body={"resource": APP_URL, "servers": [APP_URLS[1]]})
    text = Expectation(2, None, text=f'resource_metadata="{APP_URL}/.well-known/x"')

    assert substituted(body, addresses).body == {
        "resource": "http://127.0.0.1:40001",
        "servers": ["http://127.0.0.1:40002"],
    }
    assert (
        substituted(text, addresses).text
        == 'resource_metadata="http://127.0.0.1:40001/.well-known/x"'
    )
    assert matches(substituted(body, addresses).body, body.body) is False


# -- the pages are complete and stay inside the repository ------------------------------------


def headings_of(page: Path) -> set[str]:
    """GitHub's anchors for the headings of `page`."""
    anchors: set[str] = set()
    for _, line, fenced in prose_lines(page):
        heading = re.match(r"#{1,6} (.+)", line)
        if fenced or not heading:
            continue
        text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        anchor, number = slug, 0
        while anchor in anchors:
            number += 1
            anchor = f"{slug}-{number}"
        anchors.add(anchor)
    return anchors


def links_of(page: Path) -> Iterator[tuple[int, str]]:
    for number, line, fenced in prose_lines(page):
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for match in re.finditer(r"\]\(([^)\s]+)[^)]*\)|<(https?://[^>\s]+)>", line):
            yield number, match.group(1) or match.group(2)
        for match in re.finditer(r"(?<![(<])\bhttps?://\S+", line):
            yield number, match.group(0)


@pytest.mark.parametrize("page", [relative(page) for page in PAGES])
def test_every_link_resolves_inside_the_repository(page: str) -> None:
    """Relative links reach an existing file (and heading) of the repository; no others leave it
    but for standards and the reader's local instance."""
    source = ROOT / page
    problems = []
    for number, target in links_of(source):
        place = f"{page}:{number}: {target}"
        if re.match(r"[a-z]+:", target):
            host = urlsplit(target).hostname
            if host not in ALLOWED_LINK_HOSTS:
                problems.append(f"{place}: leaves the repository")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (source.parent / path_part).resolve() if path_part else source
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{place}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{place}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in headings_of(resolved):
            problems.append(f"{place}: no such heading")
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_door_not_the_house() -> None:
    """README.md stays under 10 KB; the manual lives in docs/."""
    assert len(README.read_bytes()) <= README_LIMIT_BYTES


def test_every_page_is_in_the_index() -> None:
    """docs/README.md links every page of docs/."""
    index = (ROOT / "docs" / "README.md").read_text()
    missing = [page.name for page in PAGES[1:] if page.name != "README.md"]
    assert [name for name in missing if f"]({name}" not in index] == []


def test_the_api_reference_names_every_route_and_error_code() -> None:
    """docs/api.md lists each route the app serves and each error code it can answer."""
    reference = (ROOT / "docs" / "api.md").read_text()
    settings = instance_settings("postgresql://127.0.0.1/unused", docs_enabled=True)
    routes = {
        f"`{method} {route.path}`"
        for route in create_app(settings).routes
        if isinstance(route, Route) and route.include_in_schema  # not /docs' own assets
        for method in route.methods or ()
        if method != "HEAD"
    }
    codes: set[str] = {"method_not_allowed", "server_error", "insufficient_scope"}
    pending: list[type[errors.ServiceError]] = [errors.ServiceError]
    while pending:
        kind = pending.pop()
        codes.add(kind.code)
        pending += kind.__subclasses__()

    assert sorted(r for r in routes if r not in reference) == []
    assert sorted(c for c in codes if f"`{c}`" not in reference) == []


def test_the_settings_table_has_every_setting_with_its_default() -> None:
    """docs/operations.md has a row per setting, showing the default the code uses."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.partition("\n## Settings\n")[2].partition("\n## ")[0]
    rows = {
        cells[1].strip(): cells[2]
        for line in section.splitlines()
        if (cells := line.split("|")) and len(cells) > 3 and cells[1].strip().startswith("`")
    }
    problems = []
    for setting in dataclasses.fields(Settings):
        name = f"`{setting.name.upper()}`"
        if name not in rows:
            problems.append(f"{name}: no row")
            continue
        default = setting.default
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, int | str | Path):
            shown = str(default)
        else:
            continue
        if f"`{shown}`" not in rows[name]:
            problems.append(f"{name}: the default `{shown}` is not in {rows[name].strip()!r}")
    assert problems == []


def test_the_operations_guide_names_every_command() -> None:
    """docs/operations.md describes each subcommand `tokenrota --help` lists."""
    usage = subprocess.run(
        [sys.executable, "-m", "tokenrota_server", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    # The "commands:" section lists one subcommand per line, indented by four spaces.
    section = usage.partition("\ncommands:\n")[2].partition("\n\n")[0]
    commands = re.findall(r"^    ([a-z][a-z-]+)", section, flags=re.MULTILINE)
    assert "serve" in commands, usage
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [c for c in commands if not re.search(rf"`{c}[ `]", guide)]
    assert missing == []


def test_a_page_that_serves_an_example_with_uvicorn_says_to_install_it() -> None:
    """The library does not bring uvicorn: a page that runs `uvicorn NAME:app` says to install
    it (`pip install tokenrota uvicorn`) before."""
    for page in PAGES:
        text = page.read_text()
        if (served := re.search(r"uvicorn \w+:app", text)) is None:
            continue
        installed = text.find("pip install tokenrota uvicorn")
        assert 0 <= installed < served.start(), f"{relative(page)}: uvicorn is never installed"
