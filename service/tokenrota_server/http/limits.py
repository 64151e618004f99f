"""HTTP/1.1 limits below the app: the size of a request's head and how long it may take to arrive.

uvicorn's httptools protocol hands the app a request only once its request line and headers are
complete, and buffers them without bound until then: one 64 MB header cost seconds of parsing
and a hundred megabytes before any middleware could look at it, and a client that sends its
headers (or its body) a byte at a time held a connection forever. `BoundedHttpToolsProtocol`
counts the bytes of each request's head as they arrive and refuses past the cap with 431, closes
a connection whose head is not complete in time, and answers 408 to a body that stalls.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from tokenrota_server.config import Settings

# Set in a request's ASGI scope when its body timed out: the middleware counts it as 408, not
# as a client that went away.
BODY_TIMED_OUT = "tokenrota.body_timed_out"
# After a 431, how long the rest of the client's upload is read and dropped before the connection
# closes: closing with unread bytes would reset it, and the client might never read the 431.
LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class HttpLimits:
    """The caps a connection enforces: head size in bytes, and read deadlines in seconds.

    No defaults here: they are the settings' (MAX_HEADER_BYTES, HEADER_READ_TIMEOUT,
    BODY_READ_TIMEOUT), written once in `Settings`.
    """

    max_header_bytes: int
    header_read_timeout: float
    body_read_timeout: float

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        """The limits `settings` set (MAX_HEADER_BYTES, HEADER_READ_TIMEOUT, BODY_READ_TIMEOUT)."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_read_timeout=settings.header_read_timeout,
            body_read_timeout=settings.body_read_timeout,
        )


def protocol_class(limits: HttpLimits) -> type[asyncio.Protocol]:
    """The protocol uvicorn's `Config(http=...)` takes, enforcing `limits`.

    A partial of a module-level class, so it pickles into the processes of `--workers`.
    """
    # uvicorn only ever calls the class, which the partial does as well.
    return cast(
        "type[asyncio.Protocol]", functools.partial(BoundedHttpToolsProtocol, limits=limits)
    )


def _canned_response(status: bytes, error: str, description: str) -> bytes:
    """A complete HTTP/1.1 response with the service's JSON error body, closing the connection."""
    body = json.dumps({"error": error, "error_description": description}).encode()
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"cache-control: no-store\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


HEADERS_TOO_LARGE = _canned_response(
    b"431 Request Header Fields Too Large",
    "headers_too_large",
    "The request line and headers are larger than the service accepts.",
)
BODY_TIMEOUT = _canned_response(
    b"408 Request Timeout", "request_timeout", "The request body did not arrive in time."
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on each request's head and read deadlines.

    The head is counted in raw bytes as they arrive (before httptools buffers them), so at most
    the cap plus one socket read is ever held; a head that completes within one read is measured
    from its parsed parts instead. Past the cap: 431 and close, the app never called.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # Whether the bytes arriving now belong to a request's head, and how many have so far.
        self._reading_head = True
        self._head_bytes = 0
        # The head's size as parsed (URL and header fields), for a head read in one piece.
        self._parsed_head_bytes = 0
        self._head_too_large = False
        # Set once a request is refused: what else arrives is read and dropped until the close.
        self._discarding = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that sends nothing at all is a head that never completes.
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadlines()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        # uvicorn calls this on every open connection once it begins to stop (SIGTERM or SIGINT,
        # in each worker of --workers N), then waits up to its graceful timeout for the requests
        # in flight; the lifespan's shutdown only runs after them, too late for a long poll that
        # would hold the stop for its whole `wait`. The app's `stopping` event (state.py) tells
        # such requests now.
        stopping = self.app_state.get("stopping")
        if isinstance(stopping, asyncio.Event):
            stopping.set()
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._reading_head:
            self._head_bytes += len(data)
            if self._head_deadline is None:
                self._arm_head_deadline()
        # uvicorn's own data_received, but with the size check between the parse and the reply.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._head_too_large:
                self._refuse(HEADERS_TOO_LARGE)
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            return
        if self._reading_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(HEADERS_TOO_LARGE)
        elif self._body_deadline is None:
            # Armed only once a body is on its way: a request without one costs no timer.
            self._arm_body_deadline()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._parsed_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed_head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._parsed_head_bytes += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        if self._parsed_head_bytes > self.limits.max_header_bytes:
            # Raised so that httptools stops here: no body callbacks for a request refused.
            self._head_too_large = True
            raise _HeadTooLarge()
        self._reading_head = False
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_body_deadline()
        super().on_message_complete()
        # What comes next on this connection is the next request's head.
        self._reading_head = True
        self._head_bytes = 0

    # Deadlines

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(
            self.limits.header_read_timeout, self._head_timed_out
        )

    def _arm_body_deadline(self) -> None:
        self._cancel_body_deadline()
        self._body_deadline = self.loop.call_later(
            self.limits.body_read_timeout, self._body_timed_out
        )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _cancel_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _cancel_deadlines(self) -> None:
        self._cancel_head_deadline()
        self._cancel_body_deadline()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        # A keep-alive connection idle between requests is uvicorn's timeout_keep_alive's.
        if self._reading_head and (self._head_bytes or self.cycle is None):
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_deadline = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return
        cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
        if not cycle.response_started:
            self.transport.write(BODY_TIMEOUT)
        # The app's next receive() reads a disconnect, and anything it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._cancel_deadlines()
        self.logger.warning("Request refused: its line and headers exceed the cap.")
        self.transport.write(response)
        # Half-close: the client reads the answer, then an end of stream, and closes its side.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._discarding = True
        self._head_deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose head is over the cap."""
