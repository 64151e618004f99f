"""The token service's public keys as a resource server sees them: fetched, cached, refetched.

Used by `tokenrota.verify`. Only ES256 and RS256 public keys are taken from the set
(`tokenrota.keys.key_from_jwk`); an HMAC (`oct`) key there is ignored, never trusted.
"""

from __future__ import annotations

import asyncio

import httpx

from tokenrota import keys
from tokenrota.clock import Monotonic, monotonic
from tokenrota.errors import Unavailable


class JwksKeys:
    """The token service's public keys, fetched from its JWKS URL and cached.

    An unknown kid triggers a refetch (a key was rotated in), at most once per
    `min_refetch_interval`, so a flood of made-up kids costs the service one request.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        cache_ttl: float = 300,
        min_refetch_interval: float = 30,
        clock: Monotonic = monotonic,
    ) -> None:
        self._url, self._http, self._clock = url, http, clock
        self._cache_ttl, self._min_refetch_interval = cache_ttl, min_refetch_interval
        self._keys: dict[str, keys.BoundKey] = {}
        self._fetched_at: float | None = None
        # One fetch at a time: concurrent requests with a new kid share it.
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the set was fetched (for monitoring and tests)

    async def keys_for(self, kid: str | None) -> dict[str, keys.BoundKey]:
        """The key set, refreshed if stale or if it lacks `kid` (rate limited)."""
        if self._needs_fetch(kid):
            async with self._lock:
                if self._needs_fetch(kid):
                    await self._fetch()
        return self._keys

    def _needs_fetch(self, kid: str | None) -> bool:
        if self._fetched_at is None:
            return True
        age = self._clock() - self._fetched_at
        return age >= self._cache_ttl or (
            kid not in self._keys and age >= self._min_refetch_interval
        )

    async def _fetch(self) -> None:
        try:
            response = await self._http.get(self._url)
            response.raise_for_status()
            members = response.json()["keys"]
            found = [keys.key_from_jwk(member) for member in members if isinstance(member, dict)]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            # Keep serving with the keys we have; with none at all, nothing can be checked.
            if not self._keys:
                raise Unavailable("The token service's keys cannot be fetched.") from None
            return
        finally:
            self.fetches += 1
            self._fetched_at = self._clock()
        self._keys = {bound.kid: bound for bound in found if bound is not None}
