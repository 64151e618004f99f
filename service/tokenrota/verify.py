"""Checking our access tokens in a resource server built on Starlette, without calling us.

    verifier = TokenVerifier(issuer=..., audience=..., jwks=JwksKeys(url, http))  # or secret=
    app = Starlette(routes=..., middleware=[protect(verifier)])

    @requires_scope("read")
    async def handler(request): claims = token_claims(request) ...

The checks are the service's own (tokenrota.jws): canonical compact JWS, the algorithm
pinned by the key (HS256 for a shared secret; ES256/RS256 by kid from the JWKS, never HMAC
there), iss, aud, exp/iat/nbf with a leeway, a bounded lifetime. Answers follow RFC 6750 §3: 401
invalid_token, 403 insufficient_scope, always with `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable

import httpx
from jose import jwk
from jose.utils import base64url_decode
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from tokenrota import jws
from tokenrota.claims import ACCESS_TOKEN_TYPE, AccessClaims, access_claims_of
from tokenrota.clock import Clock, Monotonic, monotonic, utc_now
from tokenrota.errors import InvalidToken, Unavailable
from tokenrota.jwks import JwksKeys


class Introspection:
    """Asks the token service whether a token is still live (RFC 7662), with a short cache.

    Catches what local checks cannot: a revoked session or client token, a disabled client.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        client_id: str,
        client_secret: str,
        cache_ttl: float = 10,
        max_entries: int = 10_000,
        clock: Monotonic = monotonic,
    ) -> None:
        self._url, self._http, self._clock = url, http, clock
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._cache_ttl, self._max_entries = cache_ttl, max_entries
        self._cache: dict[bytes, tuple[bool, float]] = {}

    def __repr__(self) -> str:
        return f"Introspection(url={self._url!r})"

    async def is_active(self, token: str) -> bool:
        """Whether the service calls the token active; cached for `cache_ttl` seconds."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self._cache_ttl:
            return cached[0]
        try:
            response = await self._http.post(self._url, data={"token": token}, auth=self._auth)
            response.raise_for_status()
            active = response.json().get("active") is True
        except (httpx.HTTPError, ValueError, AttributeError):
            raise Unavailable("The token service cannot be asked.") from None
        if len(self._cache) >= self._max_entries:
            self._cache = {k: v for k, v in self._cache.items() if now - v[1] < self._cache_ttl}
        self._cache[digest] = (active, now)
        return active


class TokenVerifier:
    """Verifies our access tokens locally: with the shared secret, or with JWKS keys."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        secret: str | None = None,
        jwks: JwksKeys | None = None,
        introspection: Introspection | None = None,
        leeway: int = 30,
        max_lifetime: int = 15 * 60,
        clock: Clock = utc_now,
    ) -> None:
        if (secret is None) == (jwks is None):
            raise ValueError("give exactly one of secret= and jwks=")
        self._select = (
            jws.hmac_key_selector(jwk.construct(secret, jws.HMAC_ALGORITHM)) if secret else None
        )
        self._jwks, self._introspection = jwks, introspection
        self._issuer, self._audience = issuer, audience
        self._leeway, self._max_lifetime, self._clock = leeway, max_lifetime, clock

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self._issuer!r}, audience={self._audience!r})"

    async def verify(self, token: str) -> AccessClaims:
        """The token's claims; raise `InvalidToken` (or `TokenExpired`), or `Unavailable`."""
        select = self._select
        if select is None:
            assert self._jwks is not None
            ring = await self._jwks.keys_for(_unverified_kid(token))
            select = jws.ring_key_selector(ring)
        claims = jws.decode_verified(token, select, ACCESS_TOKEN_TYPE)
        jws.check_registered_claims(
            claims,
            now=self._clock(),
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
            lifetime=self._max_lifetime,
        )
        access = access_claims_of(claims)
        if self._introspection is not None and not await self._introspection.is_active(token):
            raise InvalidToken()
        return access


class TokenUser(BaseUser):
    """`request.user` for a request with a valid token."""

    def __init__(self, claims: AccessClaims) -> None:
        self.claims = claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.claims.subject

    @property
    def identity(self) -> str:
        return self.claims.subject


class _Refused(AuthenticationError):
    def __init__(self, error: InvalidToken | Unavailable) -> None:
        super().__init__(error.code)
        self.error = error


class BearerBackend(AuthenticationBackend):
    """Starlette authentication from `Authorization: Bearer`; no header means anonymous."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        headers = conn.headers.getlist("authorization")
        if not headers:
            return None
        scheme, _, token = headers[0].partition(" ")
        try:
            if len(headers) > 1 or scheme.lower() != "bearer" or not token:
                raise InvalidToken()
            claims = await self._verifier.verify(token)
        except (InvalidToken, Unavailable) as error:
            raise _Refused(error) from None
        return AuthCredentials(claims.scope.split()), TokenUser(claims)


def protect(verifier: TokenVerifier) -> Middleware:
    """The middleware that authenticates every request of an app with `verifier`."""
    return Middleware(AuthenticationMiddleware, backend=BearerBackend(verifier), on_error=_refuse)


def requires_scope(
    *scopes: str,
) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Guard an endpoint: 401 without a valid token, 403 insufficient_scope without `scopes`."""

    def decorate(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            if not request.user.is_authenticated:
                return _bearer_error(401, "missing_token", "No token was presented.", None)
            missing = [scope for scope in scopes if scope not in request.auth.scopes]
            if missing:
                return _bearer_error(
                    403, "insufficient_scope", "The token lacks a required scope.", scopes
                )
            return await endpoint(request)

        return guarded

    return decorate


def token_claims(request: HTTPConnection) -> AccessClaims:
    """The verified claims of the request's token (inside a `requires_scope` endpoint)."""
    user = request.user
    if not isinstance(user, TokenUser):
        raise InvalidToken()
    return user.claims


def _refuse(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    error = exc.error if isinstance(exc, _Refused) else InvalidToken()
    if isinstance(error, Unavailable):
        return JSONResponse(
            {"error": error.code, "error_description": error.description}, status_code=503
        )
    # Expired or not, the same answer: RFC 6750 has one code for every refusal.
    return _bearer_error(401, "invalid_token", InvalidToken.description, None)


def _bearer_error(
    status: int, code: str, description: str, scopes: tuple[str, ...] | None
) -> Response:
    challenge = "Bearer" if code == "missing_token" else f'Bearer error="{code}"'
    if scopes:
        challenge += f', scope="{" ".join(scopes)}"'
    return JSONResponse(
        {"error": code, "error_description": description},
        status_code=status,
        headers={"WWW-Authenticate": challenge},
    )


def _unverified_kid(token: str) -> str | None:
    """The header's kid, to choose which keys to load; the signature check follows."""
    try:
        if len(token) > jws.MAX_TOKEN_LENGTH:
            return None
        header = json.loads(base64url_decode(token.partition(".")[0].encode("ascii")))
        kid = header.get("kid") if isinstance(header, dict) else None
        return kid if isinstance(kid, str) else None
    except (ValueError, UnicodeError, RecursionError):
        return None
