"""What one huge `Authorization` header costs the server, with and without the head cap.

Starts uvicorn in a child process twice: as `tokenrota serve` configures it (httptools with
`tokenrota_server.http.limits`), and with uvicorn's plain httptools protocol. Each serves a bare
ASGI app (the cap acts below the app, so the app's cost does not matter here). Against each,
one client sends a 64 MB `Authorization` header while another calls `GET /healthz` every 20 ms;
reported: the time until the server answers (or drops) the flood, the server's RSS growth, and
the slowest `/healthz` meanwhile.

    .venv/bin/python -m bench.header_flood
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil

HEADER_BYTES = 64 * 1024 * 1024
ROUNDS = 3


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    """200 `ok` to every HTTP request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def serve(mode: str, port: int) -> None:
    """The child: uvicorn on `port`, capped (serve.py's options) or plain (`http="httptools"`)."""
    import uvicorn
    from starlette.datastructures import Secret
    from tokenrota_server.cli.serve import uvicorn_options
    from tokenrota_server.config import Settings

    settings = Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        port=port,
    )
    options = uvicorn_options(settings)
    if mode == "plain":
        options["http"] = "httptools"
    uvicorn.run(bare_app, lifespan="off", log_level="error", **options)


@contextlib.contextmanager
def server(mode: str) -> Iterator[tuple[int, psutil.Process]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "bench.header_flood", "--serve", mode, str(port)]
    child = subprocess.Popen(command)  # noqa: S603 - our own interpreter and module
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        yield port, psutil.Process(child.pid)
    finally:
        child.terminate()
        child.wait(30)


def healthz_seconds(port: int) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while connection.recv(65536):
            pass
    return time.perf_counter() - started


def flood(port: int) -> float:
    """Send the huge header; seconds until the server answers or closes."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(head)
            chunk = b"a" * (1024 * 1024)
            for _ in range(HEADER_BYTES // len(chunk)):
                connection.sendall(chunk)
            connection.sendall(b"\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while connection.recv(65536):
                pass
    return time.perf_counter() - started


def measure(mode: str) -> tuple[float, float, float]:
    """(flood seconds, RSS growth in MB, slowest /healthz in seconds during the flood)."""
    with server(mode) as (port, process):
        healthz_seconds(port)
        rss_before = process.memory_info().rss
        peak = rss_before
        slowest = 0.0
        done = threading.Event()

        def watch() -> None:
            nonlocal slowest, peak
            while not done.is_set():
                slowest = max(slowest, healthz_seconds(port))
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        seconds = flood(port)
        done.set()
        watcher.join()
        peak = max(peak, process.memory_info().rss)
        return seconds, (peak - rss_before) / 1e6, slowest


def main() -> None:
    results: dict[str, list[tuple[float, float, float]]] = {"capped": [], "plain": []}
    for _ in range(ROUNDS):
        for mode in results:
            results[mode].append(measure(mode))
    print(f"one {HEADER_BYTES // 2**20} MB Authorization header, median of {ROUNDS} rounds:")
    print("| server | answered after | RSS growth | slowest /healthz meanwhile |")
    print("|---|---|---|---|")
    for mode, runs in results.items():
        seconds, grown, slowest = (
            sorted(column)[len(column) // 2] for column in zip(*runs, strict=True)
        )
        label = "capped (MAX_HEADER_BYTES=16384)" if mode == "capped" else "uvicorn's httptools"
        print(f"| {label} | {seconds:.3f} s | {grown:.0f} MB | {slowest * 1000:.0f} ms |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
