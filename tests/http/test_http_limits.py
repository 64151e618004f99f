"""Hostile HTTP clients against real uvicorn, configured as `tokenrota serve` configures it.

Findings F1 (unbounded request heads, slow clients) and F5 (a client leaving mid-body counted as
a 500) of issue 12. Raw sockets, since a well-behaved client cannot misbehave on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
import uvicorn
from tokenrota_server.app import create_app
from tokenrota_server.cli.serve import uvicorn_options
from tokenrota_server.config import Settings
from tokenrota_server.errors import ConfigError

# How long past a deadline the server may take to act on it before the test calls it ignored.
MARGIN_SECONDS = 5.0
# The read timeouts the tests wait out: short, so the suite does not sit through the defaults
# (10 and 30 s), and ten times the trickle's interval, so only a deadline on the whole head,
# never an idle timer, can close a trickling connection.
TIMEOUT_SECONDS = 0.3
TRICKLE_SECONDS = 0.03


@contextlib.asynccontextmanager
async def uvicorn_serving(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """The app under uvicorn with serve.py's options, in a thread, on a free port; its address."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    config = uvicorn.Config(create_app(settings), lifespan="on", **uvicorn_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            await asyncio.sleep(0.01)
        yield host, port
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        listener.close()


@contextlib.contextmanager
def connected(address: tuple[str, int]) -> Iterator[socket.socket]:
    with socket.create_connection(address, timeout=MARGIN_SECONDS) as connection:
        yield connection


def read_response(connection: socket.socket) -> tuple[int, bytes]:
    """Read until the server closes; the status and the body (empty status 0 if none came)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            data += chunk
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def closed_by_server(connection: socket.socket, deadline: float) -> bool:
    """Trickle header lines, one every TRICKLE_SECONDS, until the server closes or `deadline`
    passes."""
    connection.settimeout(TRICKLE_SECONDS)
    while time.monotonic() < deadline:
        try:
            connection.sendall(b"X-Slow: 1\r\n")
            if connection.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


async def get(address: tuple[str, int], path: str, **options: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as client:
        return await client.get(path, **options)  # type: ignore[arg-type]


async def test_a_64_kib_header_is_refused_with_431_and_the_service_keeps_answering(
    settings: Settings,
) -> None:
    async with uvicorn_serving(settings) as address:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        head += b"a" * 64 * 1024 + b"\r\n\r\n"

        def attempt() -> tuple[int, bytes]:
            with connected(address) as connection:
                connection.sendall(head)
                return read_response(connection)

        status, body = await asyncio.to_thread(attempt)

        assert status == 431
        assert json.loads(body)["error"] == "headers_too_large"
        assert (await get(address, "/healthz")).status_code == 200


async def test_a_head_over_the_cap_is_refused_before_it_is_complete(settings: Settings) -> None:
    async with uvicorn_serving(settings) as address:

        def attempt() -> tuple[int, bytes]:
            with connected(address) as connection:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                # Header lines that never end the head: only a count of raw bytes can stop it.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for _ in range(8):
                        connection.sendall(b"X-Filler: " + b"f" * 4000 + b"\r\n")
                        time.sleep(0.05)
                return read_response(connection)

        status, body = await asyncio.to_thread(attempt)

        assert status == 431
        assert json.loads(body)["error"] == "headers_too_large"


async def test_headers_just_under_the_cap_are_served(settings: Settings) -> None:
    async with uvicorn_serving(settings) as address:
        response = await get(address, "/healthz", headers={"X-Padding": "p" * 15 * 1024})

        assert response.status_code == 200


async def test_headers_trickled_past_the_header_timeout_get_the_connection_closed(
    settings: Settings,
) -> None:
    settings = replace(settings, header_read_timeout=TIMEOUT_SECONDS)
    async with uvicorn_serving(settings) as address:

        def attempt() -> bool:
            with connected(address) as connection:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                deadline = time.monotonic() + settings.header_read_timeout + MARGIN_SECONDS
                return closed_by_server(connection, deadline)

        assert await asyncio.to_thread(attempt)
        assert (await get(address, "/healthz")).status_code == 200


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    settings: Settings,
) -> None:
    settings = replace(settings, header_read_timeout=TIMEOUT_SECONDS)
    async with uvicorn_serving(settings) as address:

        def attempt() -> bytes:
            with connected(address) as connection:
                connection.settimeout(settings.header_read_timeout + MARGIN_SECONDS)
                return connection.recv(1)

        assert await asyncio.to_thread(attempt) == b""


async def test_a_stalled_body_gets_408(settings: Settings) -> None:
    settings = replace(settings, body_read_timeout=TIMEOUT_SECONDS)
    async with uvicorn_serving(settings) as address:

        def attempt() -> tuple[int, bytes]:
            with connected(address) as connection:
                connection.settimeout(settings.body_read_timeout + MARGIN_SECONDS)
                connection.sendall(
                    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n" + b'{"email": '
                )
                return read_response(connection)

        status, body = await asyncio.to_thread(attempt)

        assert status == 408
        assert json.loads(body)["error"] == "request_timeout"
        assert 'route="/login",status="408"' in (await get(address, "/metrics")).text


def login_counts(metrics: str) -> dict[str, float]:
    """`token_service_http_requests_total` for POST /login, by status."""
    pattern = re.compile(
        r'^token_service_http_requests_total\{method="POST",route="/login",status="(\d+)"\} (\S+)$',
        re.MULTILINE,
    )
    return {status: float(value) for status, value in pattern.findall(metrics)}


async def test_a_client_leaving_mid_body_is_counted_as_499_without_a_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # A body this large must be read, not refused with 413 from its Content-Length alone.
    settings = replace(settings, max_body_bytes=200_000)
    async with uvicorn_serving(settings) as address:
        # The registry is the process's: other tests' requests are counted in it too, so this
        # test compares /login's counters before and after its own request.
        before = login_counts((await get(address, "/metrics")).text)
        with connected(address) as connection:
            connection.sendall(
                b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b'{"email": '
            )
        deadline = time.monotonic() + MARGIN_SECONDS
        after = login_counts((await get(address, "/metrics")).text)
        while after.get("499", 0) == before.get("499", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            after = login_counts((await get(address, "/metrics")).text)

    changed = {status: after[status] - before.get(status, 0) for status in after}
    assert {status: n for status, n in changed.items() if n} == {"499": 1}
    assert not [record for record in caplog.records if record.exc_info]
    access = [r for r in caplog.records if r.name == "tokenrota.access" and r.route == "/login"]
    assert [record.status for record in access] == [499]


def test_the_protocol_pickles_into_worker_processes(settings: Settings) -> None:
    # `serve --workers N` spawns its workers with uvicorn's Config pickled.
    protocol = pickle.loads(pickle.dumps(uvicorn_options(settings)["http"]))  # noqa: S301 - our own bytes

    assert protocol.keywords["limits"].max_header_bytes == settings.max_header_bytes


@pytest.mark.parametrize("name", ["max_header_bytes", "header_read_timeout", "body_read_timeout"])
def test_a_limit_must_be_positive(settings: Settings, name: str) -> None:
    with pytest.raises(ConfigError, match=name.upper()):
        replace(settings, **{name: 0})
