"""Calling a service with a client_credentials token: an `httpx.Auth` for callers.

    auth = ClientCredentialsAuth("https://auth.example/oauth/token", client_id, client_secret)
    async with httpx.AsyncClient(auth=auth) as http:      # or httpx.Client(auth=auth)
        await http.get("https://billing.example/invoices")

The token is fetched on first use, reused until `renew_before` seconds before it expires, and
renewed by one request only however many requests need it at once (an asyncio.Lock for async
clients, a threading.Lock for sync ones). A refused token renews the token and retries once:
a 401, or a 403 whose challenge is `error="invalid_token"` (expired or revoked: the convention
of `tokenrota.bearer`); a 403 insufficient_scope is an answer, and returns as it is.
The token request goes through the same httpx client (transport, proxies, TLS settings).
Use one instance per event loop: its asyncio.Lock belongs to the loop that first waits on it.

`DPoPClientCredentialsAuth` is the same with DPoP (RFC 9449): a P-256 key of its own (or the one
given), a proof on the token request and on every API request (with `ath`), the token sent as
`Authorization: DPoP`; a server that asks for a nonce (`use_dpop_nonce` and `DPoP-Nonce`) is
asked again once with it, and the last nonce each origin gave is used from then on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from tokenrota.clock import Clock, Monotonic, monotonic, utc_now
from tokenrota.dpop import ProofKey


class ClientCredentialsAuth(httpx.Auth):
    """Bearer tokens from an OAuth 2.0 token endpoint (RFC 6749 §4.4), for httpx clients."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        renew_before: float = 30,
        clock: Monotonic = monotonic,
    ) -> None:
        self._token_url = token_url
        self._credentials = httpx.BasicAuth(client_id, client_secret)
        self._scope, self._renew_before, self._clock = scope, renew_before, clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._async_lock = asyncio.Lock()
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self._token_url!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.read()  # the body must survive a retry
        token = self._current()
        if token is None:
            with self._sync_lock:
                token = self._current()
                if token is None:
                    token = self._store((yield from self._sync_token_exchange()))
        response = yield self._authorized(request, token)
        if self._asks_for_nonce(response):
            response = yield self._authorized(request, token)
        if not _refuses_token(response):
            return
        with self._sync_lock:
            token = self._current(not_this=token)
            if token is None:
                token = self._store((yield from self._sync_token_exchange()))
        yield self._authorized(request, token)

    def _sync_token_exchange(self) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
        response = yield self._token_request()
        response.read()
        if self._asks_for_nonce(response):
            response = yield self._token_request()
            response.read()
        return response

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        token = self._current()
        if token is None:
            async with self._async_lock:
                token = self._current()
                if token is None:
                    token_response = yield self._token_request()
                    await token_response.aread()
                    if self._asks_for_nonce(token_response):
                        token_response = yield self._token_request()
                        await token_response.aread()
                    token = self._store(token_response)
        response = yield self._authorized(request, token)
        if self._asks_for_nonce(response):
            response = yield self._authorized(request, token)
        if not _refuses_token(response):
            return
        async with self._async_lock:
            token = self._current(not_this=token)
            if token is None:
                token_response = yield self._token_request()
                await token_response.aread()
                if self._asks_for_nonce(token_response):
                    token_response = yield self._token_request()
                    await token_response.aread()
                token = self._store(token_response)
        yield self._authorized(request, token)

    def _current(self, not_this: str | None = None) -> str | None:
        """The cached token if it is not due for renewal (and is not the one just refused)."""
        if self._token is None or self._token == not_this or self._clock() >= self._renew_at:
            return None
        return self._token

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        request = httpx.Request("POST", self._token_url, data=form)
        return next(self._credentials.auth_flow(request))

    def _store(self, response: httpx.Response) -> str:
        """Keep the token of a (read) token response; raise `httpx.HTTPStatusError` for an
        error."""
        response.raise_for_status()
        body = response.json()
        self._check_token_type(body)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int) or expires_in <= 0:
            raise httpx.DecodingError("The token endpoint answered without a usable token.")
        # Renew ahead of expiry, but never sooner than halfway through a short lifetime.
        self._renew_at = self._clock() + expires_in - min(self._renew_before, expires_in / 2)
        self._token = token
        return token

    def _authorized(self, request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def _asks_for_nonce(self, response: httpx.Response) -> bool:
        """Whether `response` asks for the request again with a DPoP nonce (never, here)."""
        return False

    def _check_token_type(self, body: dict[str, Any]) -> None:
        """Refuse a token response whose token cannot be used as this auth sends it."""


class DPoPClientCredentialsAuth(ClientCredentialsAuth):
    """`ClientCredentialsAuth` with DPoP-bound tokens (RFC 9449): a copy of the token is
    useless without `key`, which never leaves the process."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        key: ProofKey | None = None,
        scope: str | None = None,
        renew_before: float = 30,
        clock: Monotonic = monotonic,
        wall_clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            token_url,
            client_id,
            client_secret,
            scope=scope,
            renew_before=renew_before,
            clock=clock,
        )
        self.key = key or ProofKey()
        self._wall_clock = wall_clock
        # The last nonce each origin handed out (RFC 9449 §8.2: any response may carry one).
        self._nonces: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"DPoPClientCredentialsAuth(token_url={self._token_url!r}, key={self.key!r})"

    def _token_request(self) -> httpx.Request:
        request = super()._token_request()
        request.headers["DPoP"] = self._proof(request)
        return request

    def _authorized(self, request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self._proof(request, token)
        return request

    def _proof(self, request: httpx.Request, token: str | None = None) -> str:
        return self.key.proof(
            request.method,
            str(request.url),
            now=self._wall_clock(),
            access_token=token,
            nonce=self._nonces.get(_origin(request.url)),
        )

    def _asks_for_nonce(self, response: httpx.Response) -> bool:
        """Remember the nonce the response gives; True when it refused the proof for lacking
        one (400 at the token endpoint, 401 with a DPoP challenge at a resource server)."""
        nonce = response.headers.get("dpop-nonce")
        if not nonce:
            return False
        self._nonces[_origin(response.request.url)] = nonce
        if response.status_code == 401:
            return 'error="use_dpop_nonce"' in response.headers.get("www-authenticate", "")
        if response.status_code == 400:
            try:
                body = response.json()
            except (ValueError, httpx.ResponseNotRead):
                return False
            return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
        return False

    def _check_token_type(self, body: dict[str, Any]) -> None:
        # A server that ignored the proof issued a bearer token: not what the caller asked for.
        if str(body.get("token_type", "")).lower() != "dpop":
            raise httpx.DecodingError("The token endpoint did not bind the token to the DPoP key.")


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _refuses_token(response: httpx.Response) -> bool:
    """Whether the API refused the token itself (so that a new one may pass)."""
    if response.status_code == 401:
        return True
    challenge = response.headers.get("www-authenticate", "").lower()
    return response.status_code == 403 and 'error="invalid_token"' in challenge
