"""A TCP proxy that delays every chunk by D ms each way: a database "across a network".

    python -m bench.latency_proxy LISTEN_PORT TARGET DELAY_MS

TARGET is HOST:PORT or the path of a Unix socket (the embedded Postgres listens on one only).

The service's refresh is one round trip to Postgres, the prototype's five (BEGIN, UPDATE,
INSERT, COMMIT, and asyncpg's reset when the connection goes back to its pool). A `SELECT 1`
round trip took 0.08 ms on the embedded Postgres's Unix socket, 0.25 ms through this proxy with
D = 0 (its own hand-offs between threads), 0.89 ms with D = 0.25. The delay is slept with
`time.sleep` in threads (event-loop timers round up to whole milliseconds), two per direction
per connection, in a process of its own so that it does not share a GIL with the client.
Chunks keep their order: one is sent D ms after it was read, or after the one before it.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import sys
import threading
import time

Chunk = tuple[float, bytes]


def pump(
    source: socket.socket, target: socket.socket, delay: float, finished: threading.Semaphore
) -> None:
    """Read `source` until it ends and write each chunk to `target` `delay` s after it arrived;
    release `finished` when the last one is written (or the connection broke)."""
    chunks: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()

    def forward() -> None:
        try:
            while (item := chunks.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other side is gone: so is this connection
        finally:
            finished.release()

    threading.Thread(target=forward, daemon=True).start()
    try:
        while data := source.recv(65536):
            chunks.put((time.monotonic() + delay, data))
    except OSError:
        pass
    chunks.put(None)


def connect(target: str) -> socket.socket:
    """A connection to `target` (HOST:PORT or a Unix socket's path); `OSError` if refused."""
    if target.startswith("/"):
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.connect(target)
        except OSError:
            unix.close()
            raise
        return unix
    host, _, port = target.rpartition(":")
    tcp = socket.create_connection((host, int(port)))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tcp


def serve(listen_port: int, target: str, delay: float) -> None:
    """Accept on 127.0.0.1:`listen_port` and forward each connection to `target`, forever."""
    with socket.create_server(("127.0.0.1", listen_port)) as listener:
        while True:
            client, _ = listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                upstream = connect(target)
            except OSError:
                client.close()  # as the database would have: the client sees it refused
                continue
            finished = threading.Semaphore(0)
            for source, sink in ((client, upstream), (upstream, client)):
                arguments = (source, sink, delay, finished)
                threading.Thread(target=pump, args=arguments, daemon=True).start()
            closing = threading.Thread(
                target=close_both, args=(client, upstream, finished), daemon=True
            )
            closing.start()


def close_both(
    client: socket.socket, upstream: socket.socket, finished: threading.Semaphore
) -> None:
    """Close the connection's two sockets once both directions have ended."""
    for _ in range(2):
        finished.acquire()
    client.close()
    upstream.close()


def main() -> None:
    listen_port, target, delay_ms = sys.argv[1:4]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the proxy's whole job is done
        serve(int(listen_port), target, float(delay_ms) / 1000)


if __name__ == "__main__":
    main()
