"""Following the service's revocation feed, so a resource server refuses revoked tokens in
seconds without asking the service about each token.

    follower = RevocationFollower(
        "https://auth.example.com/oauth/revocations", http,
        client_id=..., client_secret=..., token_lifetime=900,
    )
    verifier = TokenVerifier(issuer=..., audience=..., secret=..., revocations=follower)

One background task per follower (so: share one follower per process) long-polls
`GET /oauth/revocations`. It starts at the verifier's first check, or explicitly with
`await follower.start()` / `async with follower:` in the app's lifespan, which also stops it.

What it keeps: the revoked session ids and disabled clients' ids until every access token issued
before the revocation has expired (`revoked_at + token_lifetime + leeway`), and revoked client
tokens' jti until their `exp + leeway`; older entries are dropped, so memory is bounded by
what was revoked within one token lifetime, whatever the total.

When the feed cannot be read (the service down, bad credentials), it retries with exponential
backoff. Once `lag_seconds` (0 while the service holds a long poll; else the seconds since an
answer was due or last came) passes `stale_after` it logs a warning (once per episode) and
`stale` turns true; with `fail_closed=True` tokens are then refused
(503 unavailable) until it has caught up again, as they are before its first catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import uuid
from types import TracebackType
from typing import Any

import httpx

from tokenrota.claims import AccessClaims
from tokenrota.clock import Clock, Monotonic, monotonic, utc_now
from tokenrota.errors import InvalidToken, Unavailable

logger = logging.getLogger("tokenrota.revocations")

__all__ = ["RevocationFollower"]

# The reason leads the description; the error stays `invalid_token` (RFC 6750 §3.1). A client's
# token has no session, so its reasons name the token.
SESSION_REVOKED = "session_revoked: the token's session has been revoked."
TOKEN_REVOKED = "token_revoked: the token has been revoked."  # noqa: S105 - a message
CLIENT_REVOKED = "token_revoked: the token's client has been disabled."
# Backoff after a failed read: doubles from the first to the last, with up to 50% jitter so that
# a fleet of resource servers does not hit a recovering service in step.
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# The HTTP timeout beyond the long poll's own wait.
REQUEST_MARGIN_SECONDS = 10.0


class RevocationFollower:
    """Follows the revocation feed in the background; answers whether a token was revoked."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        client_id: str,
        client_secret: str,
        token_lifetime: int = 15 * 60,
        leeway: int = 30,
        wait: int = 20,
        stale_after: float = 30.0,
        fail_closed: bool = False,
        clock: Clock = utc_now,
        monotonic_clock: Monotonic = monotonic,
    ) -> None:
        if not 0 < wait <= 30:
            raise ValueError("wait must be 1 to 30 seconds (the feed's limit)")
        if stale_after <= wait:
            raise ValueError("stale_after must exceed wait: a long poll takes up to wait seconds")
        self._url, self._http = url, http
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._retention = token_lifetime + leeway
        self._leeway, self._wait, self._stale_after = leeway, wait, stale_after
        self.fail_closed = fail_closed
        self._clock, self._monotonic = clock, monotonic_clock
        # Key -> when it may be forgotten (epoch seconds); the heap orders the forgetting.
        self._sessions: dict[str, float] = {}
        self._tokens: dict[str, float] = {}
        self._clients: dict[str, float] = {}
        # The entries of each kind, as the expiry heap names it.
        self._kept = {"s": self._sessions, "t": self._tokens, "c": self._clients}
        self._expiry: list[tuple[float, str, str]] = []
        self._cursor: str | None = None
        self._caught_up = False
        self._started_at = monotonic_clock()
        # When the last successful answer arrived, and when the long poll now held (sent after
        # it) was sent; None when none is.
        self._confirmed_at: float | None = None
        self._held_since: float | None = None
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RevocationFollower(url={self._url!r})"

    # -- the verifier's side ------------------------------------------------------------------

    def check(self, claims: AccessClaims) -> None:
        """Raise `InvalidToken` for the claims of a revoked session's token, a revoked client
        token or a disabled client's token, `Unavailable` when failing closed while the feed is
        stale; return otherwise."""
        if self._task is None:
            self.start_soon()
        if self.fail_closed and self.stale:
            raise Unavailable("The revocation feed is not up to date.")
        if claims.session_id is not None and claims.session_id in self._sessions:
            raise InvalidToken(SESSION_REVOKED)
        if claims.client_id is not None and claims.jti in self._tokens:
            raise InvalidToken(TOKEN_REVOKED)
        # A disabled client cannot be enabled again, so every token of its id is refused.
        if claims.client_id is not None and claims.client_id in self._clients:
            raise InvalidToken(CLIENT_REVOKED)

    @property
    def stale(self) -> bool:
        """Whether the revocations known may be behind by more than `stale_after` seconds."""
        stale = not self._caught_up or self.lag_seconds > self._stale_after
        if stale and not self._warned and self.lag_seconds > self._stale_after:
            self._warned = True
            logger.warning("revocation feed unreachable for %.0f s", self.lag_seconds)
        return stale

    @property
    def lag_seconds(self) -> float:
        """How many seconds the revocations known may be behind: 0 on a healthy follower.

        While the service holds a long poll sent after a successful answer, it would answer at
        once with anything revoked: 0, until `wait` seconds pass without its answer. Otherwise
        (backing off after a failure, between two reads), the seconds since the last successful
        answer arrived; before the first, since the follower started.
        """
        now = self._monotonic()
        if self._confirmed_at is None:
            return now - self._started_at
        if self._held_since is not None:
            return max(0.0, now - (self._held_since + self._wait))
        return now - self._confirmed_at

    @property
    def entries(self) -> int:
        """How many revocations are kept (sessions, client tokens and clients)."""
        return len(self._sessions) + len(self._tokens) + len(self._clients)

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following in the background (idempotent)."""
        self.start_soon()

    def start_soon(self) -> None:
        """Start the background task on the running loop, if not running yet."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name="revocation-follower"
            )

    async def aclose(self) -> None:
        """Stop following; what is known stays known."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> RevocationFollower:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _follow(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        answered = False
        while True:
            wait = self._wait if self._caught_up else 0
            if answered and wait > 0:
                self._held_since = self._monotonic()
            try:
                body = await self._read(wait)
                found = self.apply(body)
            except Exception as error:
                answered, self._held_since = False, None
                # Whatever failed (the network, the service, a bug), the loop must go on: a dead
                # follower would leave the verifier accepting revoked tokens without a word.
                if isinstance(error, httpx.HTTPError | ValueError):
                    logger.info("revocation feed read failed: %s", _reason(error))
                else:
                    logger.exception("revocation feed read failed unexpectedly")
                self.stale  # noqa: B018 - logs the warning once the limit is passed
                await asyncio.sleep(backoff * (1 + random.random() / 2))  # noqa: S311 - jitter
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = FIRST_BACKOFF_SECONDS
            self._held_since = None
            if found == 0 or self._caught_up:
                # An empty answer (or a long poll's) shows the state as of when it arrived.
                if not self._caught_up or self._warned:
                    logger.info("revocation feed caught up")
                self._caught_up, self._confirmed_at, self._warned = True, self._monotonic(), False
                answered = True

    async def _read(self, wait: int) -> Any:
        params = {"wait": str(wait)}
        if self._cursor is not None:
            params["after"] = self._cursor
        response = await self._http.get(
            self._url,
            params=params,
            auth=self._auth,
            timeout=wait + REQUEST_MARGIN_SECONDS,
        )
        response.raise_for_status()
        return response.json()

    # -- the feed's answers -------------------------------------------------------------------

    def apply(self, body: Any) -> int:
        """Take in one answer of the feed; return how many revocations it held.

        Raises `ValueError` for an answer that is not the feed's (then nothing is taken in).
        """
        if not isinstance(body, dict) or not isinstance(body.get("cursor"), str):
            raise ValueError("not a revocation feed answer")
        # `clients` is absent from the answers of a service older than migration 0008.
        sessions, tokens = body.get("sessions"), body.get("tokens")
        clients = body.get("clients", [])
        if not (
            isinstance(sessions, list) and isinstance(tokens, list) and isinstance(clients, list)
        ):
            raise ValueError("not a revocation feed answer")
        entries = (
            [
                ("s", _text(item, "sid"), _number(item, "revoked_at") + self._retention)
                for item in sessions
            ]
            + [("t", _text(item, "jti"), _number(item, "exp") + self._leeway) for item in tokens]
            + [
                ("c", _text(item, "client_id"), _number(item, "revoked_at") + self._retention)
                for item in clients
            ]
        )
        for kind, key, forget_at in entries:
            kept = self._kept[kind]
            if forget_at > kept.get(key, 0.0):
                kept[key] = forget_at
                heapq.heappush(self._expiry, (forget_at, kind, key))
        self._cursor = body["cursor"]
        self.forget_expired()
        return len(entries)

    def forget_expired(self) -> None:
        """Drop the revocations that no unexpired token can need any more."""
        now = self._clock().timestamp()
        while self._expiry and self._expiry[0][0] <= now:
            forget_at, kind, key = heapq.heappop(self._expiry)
            kept = self._kept[kind]
            if kept.get(key) == forget_at:
                del kept[key]


def _text(item: Any, name: str) -> str:
    value = item.get(name) if isinstance(item, dict) else None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"a feed entry without a valid {name}")
    if name == "sid":
        try:
            value = str(uuid.UUID(value))
        except ValueError:
            raise ValueError("a feed entry whose sid is not a UUID") from None
    return value


def _number(item: Any, name: str) -> float:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a feed entry without a valid {name}")
    return float(value)


def _reason(error: Exception) -> str:
    # Never the URL's query or a body: only the kind of failure, and the status if any.
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return type(error).__name__
