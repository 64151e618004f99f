"""With DPOP_NONCE, a successful answer to a request with a DPoP proof names the current nonce.

RFC 9449 §8.2 and §9: a server may hand out its next nonce in any answer's `DPoP-Nonce` header.
Without it, a client learns of each new nonce only by having a proof refused, once per rotation.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DPOP_HEADER = b"dpop"
NONCE_HEADER = b"dpop-nonce"


class SuccessNonces:
    """Adds `DPoP-Nonce` to the 2xx answers of requests that carried a `DPoP` header (refusals
    name their nonce themselves, `http/web.py`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(name == DPOP_HEADER for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                state: Any = scope["state"]
                nonce = state["proofs"].current_nonce(state["clock"]())
                if nonce is not None:
                    message["headers"] = [
                        *message.get("headers", ()),
                        (NONCE_HEADER, nonce.encode("ascii")),
                    ]
            await send(message)

        await self.app(scope, receive, send_with_nonce)
