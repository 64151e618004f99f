"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for timing one request at a time.

httpx costs 2-4 ms a round trip on this machine (a `/healthz` took 2.5 ms through it), more
than a whole `/profile`: timed through httpx, the client's time and its swings are in every
number. This client writes the request in one call and reads a `Content-Length` answer,
nothing else (no chunked bodies, no redirects, no TLS), so what it times is mostly the server.
It is for benchmarks only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any


class RawClient:
    """One keep-alive connection to `host:port`, opened on first use and reopened when the
    server has closed it (the service closes idle keep-alive connections after a few seconds)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def ready(self) -> None:
        """Open the connection unless one is open that the server has not closed: called before
        a timed request, so that reconnecting after an idle pause is not part of its time."""
        if self._reader is None or self._reader.at_eof() or self._writer_closing():
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request and return its status and body. If the server closed the
        connection before answering (an idle close racing the request), reconnect and send it
        once more; raises `ConnectionError` if that fails too, `ValueError` on an answer this
        client does not read (no Content-Length)."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        body = b""
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            head.append("Content-Type: application/json")
        elif form is not None:
            body = form.encode()
            head.append("Content-Type: application/x-www-form-urlencoded")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            await self.ready()
            try:
                return await self._exchange(message)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """`request`, then the body as JSON; raises `RuntimeError` on a status that is not 2xx."""
        status, body = await self.request(
            method, path, json_body=json_body, form=form, headers=headers
        )
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path} answered {status}: {body[:200]!r}")
        return json.loads(body) if body else None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):  # reset by the server: closed either way
                await writer.wait_closed()

    def _writer_closing(self) -> bool:
        return self._writer is None or self._writer.is_closing()

    async def _exchange(self, message: bytes) -> tuple[int, bytes]:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(message)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        length, closing = None, False
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection":
                closing = value.strip().lower() == "close"
        if length is None:
            raise ValueError(f"an answer without Content-Length: {status_line}")
        body = await self._reader.readexactly(length)
        if closing:
            self._writer.close()  # the server said so: the next request opens another
        return int(status_line.split()[1]), body
