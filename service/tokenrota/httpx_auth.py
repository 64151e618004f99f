"""Calling a service with a client_credentials token: an `httpx.Auth` for callers.

    auth = ClientCredentialsAuth(
        "https://auth.example/oauth/token", client_id, client_secret,
        resource="https://billing.example",  # RFC 8707: the API the token is for
    )
    async with httpx.AsyncClient(auth=auth) as http:      # or httpx.Client(auth=auth)
        await http.get("https://billing.example/invoices")

Each token is for one resource (its `aud`), and an API accepts only its own. A caller of several
APIs gives `resources={"https://billing.example": "https://billing.example", ...}`, mapping each
origin it calls to that API's resource URI: each resource gets a token of its own, cached and
renewed apart, and a request to an origin not listed raises `ValueError` before anything is
sent (no token goes where it was not meant to). Without either, the token is for the token
service's own routes (its admin API).

A token is fetched on first use, reused until `renew_before` seconds before it expires, and
renewed by one request only however many requests need it at once (an asyncio.Lock for async
clients, a threading.Lock for sync ones). A refused token renews the token and retries once:
a 401, or a 403 whose challenge is `error="invalid_token"` (expired or revoked: the convention
of `tokenrota.bearer`); a 403 insufficient_scope is an answer, and returns as it is.
The token request goes through the same httpx client (transport, proxies, TLS settings).
Use one instance per event loop: its asyncio.Lock belongs to the loop that first waits on it.

`TokenExchange` is for a resource server that calls the next service on its user's behalf (RFC
8693): `exchange.on_behalf_of(subject_token)` is an `httpx.Auth` that trades the token the
resource server was called with for one for the next resource, and caches it while it lasts.

`DPoPClientCredentialsAuth` is `ClientCredentialsAuth` with DPoP (RFC 9449): a P-256 key of its
own (or the one given), a proof on the token request and on every API request (with `ath`), the
token sent as `Authorization: DPoP`; a server that asks for a nonce (`use_dpop_nonce` and
`DPoP-Nonce`) is asked again once with it, and the last nonce each origin gave is used from then on.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any

import httpx

from tokenrota.clock import Clock, Monotonic, monotonic, utc_now
from tokenrota.dpop import ProofKey
from tokenrota.resource import resource_uri

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
# Exchanged tokens kept at once (one per user calling): a bound on memory, not a tuning knob.
MAX_CACHED_TOKENS = 10_000


class _Tokens:
    """Tokens by key (a resource), each renewed by one request at a time."""

    def __init__(self, renew_before: float, clock: Monotonic) -> None:
        self._renew_before, self._clock = renew_before, clock
        self._tokens: dict[object, tuple[str, float]] = {}
        self._async_locks: dict[object, asyncio.Lock] = {}
        self._sync_locks: dict[object, threading.Lock] = {}
        self._guard = threading.Lock()

    def current(self, key: object, not_this: str | None = None) -> str | None:
        """The cached token if it is not due for renewal (and is not the one just refused)."""
        entry = self._tokens.get(key)
        if entry is None or entry[0] == not_this or self._clock() >= entry[1]:
            return None
        return entry[0]

    def async_lock(self, key: object) -> asyncio.Lock:
        return self._async_locks.setdefault(key, asyncio.Lock())

    def sync_lock(self, key: object) -> threading.Lock:
        with self._guard:
            return self._sync_locks.setdefault(key, threading.Lock())

    def store(
        self, key: object, response: httpx.Response, check: Callable[[dict[str, Any]], None]
    ) -> str:
        """Keep the token of a token response; raise `httpx.HTTPStatusError` for an error."""
        response.raise_for_status()
        body = response.json()
        check(body)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int) or expires_in <= 0:
            raise httpx.DecodingError("The token endpoint answered without a usable token.")
        # Renew ahead of expiry, but never sooner than halfway through a short lifetime.
        now = self._clock()
        renew_at = now + expires_in - min(self._renew_before, expires_in / 2)
        self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        if len(self._tokens) >= MAX_CACHED_TOKENS:
            # Many users at once: forget the one due soonest rather than grow without bound.
            del self._tokens[min(self._tokens, key=lambda k: self._tokens[k][1])]
        self._tokens[key] = (token, renew_at)
        return token


class _TokenAuth(httpx.Auth):
    """The flow both auths share: a cached token per key, one fetch at a time, one retry."""

    def __init__(self, tokens: _Tokens) -> None:
        self._cache = tokens

    def _key(self, request: httpx.Request) -> object:
        raise NotImplementedError

    def _token_request(self, key: object) -> httpx.Request:
        raise NotImplementedError

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.read()  # the body must survive a retry
        key = self._key(request)
        token = self._cache.current(key)
        if token is None:
            with self._cache.sync_lock(key):
                token = self._cache.current(key)
                if token is None:
                    token_response = yield from self._sync_token_exchange(key)
                    token = self._cache.store(key, token_response, self._check_token_type)
        response = yield self._authorized(request, token)
        if self._asks_for_nonce(response):
            response = yield self._authorized(request, token)
            self._remember_nonce(response)
        if not _refuses_token(response):
            return
        with self._cache.sync_lock(key):
            token = self._cache.current(key, not_this=token)
            if token is None:
                token_response = yield from self._sync_token_exchange(key)
                token = self._cache.store(key, token_response, self._check_token_type)
        self._remember_nonce((yield self._authorized(request, token)))

    def _sync_token_exchange(
        self, key: object
    ) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
        response = yield self._token_request(key)
        response.read()
        if self._asks_for_nonce(response):
            response = yield self._token_request(key)
            response.read()
            self._remember_nonce(response)
        return response

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        key = self._key(request)
        token = self._cache.current(key)
        if token is None:
            async with self._cache.async_lock(key):
                token = self._cache.current(key)
                if token is None:
                    token_response = yield self._token_request(key)
                    await token_response.aread()
                    if self._asks_for_nonce(token_response):
                        token_response = yield self._token_request(key)
                        await token_response.aread()
                        self._remember_nonce(token_response)
                    token = self._cache.store(key, token_response, self._check_token_type)
        response = yield self._authorized(request, token)
        if self._asks_for_nonce(response):
            response = yield self._authorized(request, token)
            self._remember_nonce(response)
        if not _refuses_token(response):
            return
        async with self._cache.async_lock(key):
            token = self._cache.current(key, not_this=token)
            if token is None:
                token_response = yield self._token_request(key)
                await token_response.aread()
                if self._asks_for_nonce(token_response):
                    token_response = yield self._token_request(key)
                    await token_response.aread()
                    self._remember_nonce(token_response)
                token = self._cache.store(key, token_response, self._check_token_type)
        self._remember_nonce((yield self._authorized(request, token)))

    def _authorized(self, request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def _asks_for_nonce(self, response: httpx.Response) -> bool:
        """Whether `response` asks for the request again with a DPoP nonce (never, here)."""
        return False

    def _remember_nonce(self, response: httpx.Response) -> bool:
        """Keep the DPoP nonce `response` hands out; whether it had one (never, here)."""
        return False

    def _check_token_type(self, body: dict[str, Any]) -> None:
        """Refuse a token response whose token cannot be used as this auth sends it."""


class ClientCredentialsAuth(_TokenAuth):
    """Bearer tokens from an OAuth 2.0 token endpoint (RFC 6749 §4.4), for httpx clients, one
    per resource (RFC 8707)."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        resource: str | None = None,
        resources: Mapping[str, str] | None = None,
        scope: str | None = None,
        renew_before: float = 30,
        clock: Monotonic = monotonic,
    ) -> None:
        if resource is not None and resources is not None:
            raise ValueError("give resource= or resources=, not both")
        super().__init__(_Tokens(renew_before, clock))
        self._token_url = token_url
        self._credentials = httpx.BasicAuth(client_id, client_secret)
        self._scope = scope
        self._resource = None if resource is None else resource_uri(resource)
        self._resources = None
        if resources is not None:
            self._resources = {
                _origin(origin): resource_uri(uri) for origin, uri in resources.items()
            }

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self._token_url!r})"

    def _key(self, request: httpx.Request) -> object:
        """The resource a request's token is for."""
        if self._resources is None:
            return self._resource
        origin = _origin(str(request.url))
        if origin not in self._resources:
            raise ValueError(f"no resource is configured for {origin}")
        return self._resources[origin]

    def _token_request(self, key: object) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if isinstance(key, str):
            form["resource"] = key
        if self._scope:
            form["scope"] = self._scope
        request = httpx.Request("POST", self._token_url, data=form)
        return next(self._credentials.auth_flow(request))


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
        resource: str | None = None,
        resources: Mapping[str, str] | None = None,
        scope: str | None = None,
        renew_before: float = 30,
        clock: Monotonic = monotonic,
        wall_clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            token_url,
            client_id,
            client_secret,
            resource=resource,
            resources=resources,
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

    def _token_request(self, key: object) -> httpx.Request:
        request = super()._token_request(key)
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
            nonce=self._nonces.get(_origin(str(request.url))),
        )

    def _asks_for_nonce(self, response: httpx.Response) -> bool:
        """Remember the nonce the response gives; True when it refused the proof for lacking
        one (400 at the token endpoint, 401 with a DPoP challenge at a resource server)."""
        if not self._remember_nonce(response):
            return False
        if response.status_code == 401:
            return 'error="use_dpop_nonce"' in response.headers.get("www-authenticate", "")
        if response.status_code == 400:
            try:
                body = response.json()
            except (ValueError, httpx.ResponseNotRead):
                return False
            return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
        return False

    def _remember_nonce(self, response: httpx.Response) -> bool:
        """Keep the nonce of any answer, a success too (RFC 9449 §8.2); whether it had one."""
        nonce = response.headers.get("dpop-nonce")
        if not nonce:
            return False
        self._nonces[_origin(str(response.request.url))] = nonce
        return True

    def _check_token_type(self, body: dict[str, Any]) -> None:
        # A server that ignored the proof issued a bearer token: not what the caller asked for.
        if str(body.get("token_type", "")).lower() != "dpop":
            raise httpx.DecodingError("The token endpoint did not bind the token to the DPoP key.")


class TokenExchange:
    """A resource server's tokens for the next one, on behalf of the user who called it (RFC
    8693 token exchange, with the resource server's own client credentials).

        exchange = TokenExchange(token_url, client_id, client_secret,
                                 resource="https://billing.example")
        await http.get("https://billing.example/invoices",
                       auth=exchange.on_behalf_of(presented_token(request)))

    One exchanged token per subject token, reused until shortly before it expires (it never
    outlives the subject token), fetched once however many requests need it at once.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        resource: str,
        scope: str | None = None,
        renew_before: float = 30,
        clock: Monotonic = monotonic,
    ) -> None:
        self._token_url = token_url
        self._credentials = httpx.BasicAuth(client_id, client_secret)
        self._resource, self._scope = resource_uri(resource), scope
        self._tokens = _Tokens(renew_before, clock)

    def __repr__(self) -> str:
        return f"TokenExchange(token_url={self._token_url!r}, resource={self._resource!r})"

    def on_behalf_of(self, subject_token: str) -> httpx.Auth:
        """The auth for requests made for the holder of `subject_token`."""
        return _ExchangeAuth(self, subject_token)

    def _token_request(self, subject_token: str) -> httpx.Request:
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": self._resource,
        }
        if self._scope:
            form["scope"] = self._scope
        request = httpx.Request("POST", self._token_url, data=form)
        return next(self._credentials.auth_flow(request))


class _ExchangeAuth(_TokenAuth):
    def __init__(self, exchange: TokenExchange, subject_token: str) -> None:
        super().__init__(exchange._tokens)
        self._exchange, self._subject_token = exchange, subject_token
        # The cache is keyed by the subject token's digest: it keeps no user's token.
        self._digest = hashlib.sha256(subject_token.encode()).digest()

    def __repr__(self) -> str:
        return f"{self._exchange!r}.on_behalf_of(...)"

    def _key(self, request: httpx.Request) -> object:
        return self._digest

    def _token_request(self, key: object) -> httpx.Request:
        return self._exchange._token_request(self._subject_token)


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, as httpx spells it (lowercase, default port dropped)."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ValueError(f"not an http(s) origin: {url!r}")
    port = f":{parsed.port}" if parsed.port is not None else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}"


def _refuses_token(response: httpx.Response) -> bool:
    """Whether the API refused the token itself (so that a new one may pass)."""
    if response.status_code == 401:
        return True
    challenge = response.headers.get("www-authenticate", "").lower()
    return response.status_code == 403 and 'error="invalid_token"' in challenge
