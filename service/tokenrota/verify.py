"""Checking our access tokens in a resource server built on Starlette, without calling us.

    verifier = TokenVerifier(
        issuer=..., audience="https://orders.example", jwks=JwksKeys(url, http)  # or secret=
    )
    app = Starlette(
        routes=...,
        middleware=[
            Middleware(CORSMiddleware, ...),  # outside protect: preflights carry no token
            protect(verifier, public=["/healthz", "/docs/"], scopes_supported=["orders:read"]),
        ],
    )

    @requires_scope("read")
    async def handler(request): claims = token_claims(request) ...

The audience is this resource server's own URI (RFC 8707; `tokenrota.resource` gives the
grammar): a token the service minted for another API, or for the service's own routes, is refused
here. `previous_audience=` also accepts one older audience while callers move over (the shared
`TOKEN_AUDIENCE` of before resources; docs/services.md's migration). `protect` serves the RFC 9728
metadata at `/.well-known/oauth-protected-resource` (the resource's path appended) and names it in
every challenge (`resource_metadata="..."`), so a client learns what to ask the service for.

Fail closed: `protect` refuses every HTTP and WebSocket request without a valid token, whatever
route it is for (unknown paths and wrong methods included, so an anonymous caller learns nothing
about the routes), except on the paths it is told are public. Scopes are per route
(`requires_scope`). Answers follow `tokenrota.bearer`, the same as the service's own: 401
missing_token, 403 token_expired or invalid_token, 403 insufficient_scope, 503 when the keys or
the introspection endpoint cannot be reached; always with `WWW-Authenticate: Bearer ...`.

DPoP-bound tokens (RFC 9449; `cnf.jkt` in the token) are accepted as `Authorization: DPoP` with
a `DPoP` proof by their key (`tokenrota.dpop`: signature, method, URL, age, `ath`, and a `jti` not
seen before by this verifier); as a plain bearer they are refused (403 invalid_token), and a bad
proof is 401 with `WWW-Authenticate: DPoP error="invalid_dpop_proof"`. With
`dpop_nonces=tokenrota.dpop.Nonces(secret)` proofs must also carry a nonce of this server: one
without (or with an expired one) is 401 `use_dpop_nonce` with the nonce to use in `DPoP-Nonce`,
and a success to a request with a proof names the current nonce the same way.

Revoked sessions and client tokens: pass `revocations=RevocationFollower(...)`
(tokenrota.revocations), which follows the service's revocation feed in the background; their
tokens are then refused with 403 invalid_token ("session_revoked: ..." or, for a client's
token, "token_revoked: ...") within about a second,
without a request per token. `introspection=` asks the service about every token instead.

The checks are the service's own (tokenrota.jws): canonical compact JWS, the algorithm
pinned by the key (HS256 for a shared secret; ES256/RS256 by kid from the JWKS, never HMAC
there), iss, aud, exp/iat/nbf with a leeway, a bounded lifetime.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable

import httpx
from jose import jwk
from jose.utils import base64url_decode
from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenrota import dpop, jws
from tokenrota.bearer import authorization, refusal
from tokenrota.claims import ACCESS_TOKEN_TYPE, AccessClaims, access_claims_of
from tokenrota.clock import Clock, Monotonic, monotonic, utc_now
from tokenrota.errors import (
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidToken,
    MissingToken,
    Unavailable,
    UseDPoPNonce,
)
from tokenrota.jwks import JwksKeys
from tokenrota.resource import ResourceMetadata, resource_uri
from tokenrota.revocations import RevocationFollower

# Where the middleware leaves the metadata URL for requires_scope, in the ASGI scope.
_METADATA_KEY = "tokenrota.resource_metadata"
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

__all__ = [
    "BearerMiddleware",
    "Introspection",
    "JwksKeys",
    "ResourceMetadata",
    "RevocationFollower",
    "TokenUser",
    "TokenVerifier",
    "presented_token",
    "protect",
    "requires_scope",
    "token_claims",
]


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
        previous_audience: str | None = None,
        secret: str | None = None,
        jwks: JwksKeys | None = None,
        introspection: Introspection | None = None,
        revocations: RevocationFollower | None = None,
        leeway: int = 30,
        max_lifetime: int = 15 * 60,
        clock: Clock = utc_now,
        dpop_nonces: dpop.Nonces | None = None,
    ) -> None:
        if (secret is None) == (jwks is None):
            raise ValueError("give exactly one of secret= and jwks=")
        try:
            resource_uri(audience)
        except ValueError as error:
            # The one break of the move to resources: say what to do, not only what is wrong.
            raise ValueError(
                f"audience= is this resource server's own URI, as registered with the token "
                f"service ({error}); an older shared audience goes in previous_audience= "
                f"while callers move over"
            ) from None
        if previous_audience is not None and (
            not previous_audience or previous_audience == audience
        ):
            raise ValueError("previous_audience= is another, non-empty audience")
        self._select = (
            jws.hmac_key_selector(jwk.construct(secret, jws.HMAC_ALGORITHM)) if secret else None
        )
        self._jwks, self._introspection = jwks, introspection
        self._revocations = revocations
        self._issuer, self._audience = issuer, audience
        self._previous_audience = previous_audience
        self._leeway, self._max_lifetime, self._clock = leeway, max_lifetime, clock
        self._proofs_seen = dpop.ReplayCache()
        self._nonces = dpop_nonces

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self._issuer!r}, audience={self._audience!r})"

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        """This resource server's URI: the `aud` its tokens must carry."""
        return self._audience

    def current_nonce(self) -> str | None:
        """The nonce to hand out now (in any answer's `DPoP-Nonce`), None without `dpop_nonces`."""
        return self._nonces.current(self._clock()) if self._nonces is not None else None

    async def verify(self, token: str) -> AccessClaims:
        """The token's claims; raise `InvalidToken` (or `TokenExpired`), or `Unavailable`."""
        select = self._select
        if select is None:
            assert self._jwks is not None
            ring = await self._jwks.keys_for(_unverified_kid(token))
            select = jws.ring_key_selector(ring)
        claims = jws.decode_verified(token, select, ACCESS_TOKEN_TYPE)
        audience = self._audience
        if self._previous_audience is not None and claims.get("aud") == self._previous_audience:
            audience = self._previous_audience
        jws.check_registered_claims(
            claims,
            now=self._clock(),
            issuer=self._issuer,
            audience=audience,
            leeway=self._leeway,
            lifetime=self._max_lifetime,
        )
        access = access_claims_of(claims)
        if self._revocations is not None:
            self._revocations.check(access)
        if self._introspection is not None and not await self._introspection.is_active(token):
            raise InvalidToken()
        return access

    async def verify_request(
        self, scheme: str, token: str, *, method: str, url: str, proof: str | None
    ) -> AccessClaims:
        """The claims of a request's token, with its DPoP proof checked when it is bound.

        `scheme` is `bearer` or `dpop` (from `tokenrota.bearer.authorization`), `proof` the one
        `DPoP` header, if any. A bound token needs the DPoP scheme and a proof by its key; an
        unbound token is refused under the DPoP scheme (RFC 9449 §7.1). Raises as `verify` does,
        and `InvalidDPoPProof`.
        """
        checked = None
        if scheme == "dpop":
            if proof is None:
                raise InvalidDPoPProof("A DPoP proof is required.")
            now = self._clock()
            nonces = self._nonces
            try:
                checked = dpop.check_proof(
                    proof,
                    method=method,
                    url=url,
                    now=now,
                    access_token=token,
                    nonce=nonces.accepted(now) if nonces is not None else None,
                )
            except UseDPoPNonce:
                assert nonces is not None
                raise UseDPoPNonce(nonces.current(now)) from None
        claims = await self.verify(token)
        if checked is None:
            if claims.confirmation_jkt is not None:
                raise InvalidToken("A DPoP-bound token needs its proof.")
            return claims
        if claims.confirmation_jkt is None:
            raise InvalidToken("The token is not DPoP-bound.")
        if checked.jkt != claims.confirmation_jkt:
            raise InvalidDPoPProof("The DPoP proof is by another key than the token's.")
        if not self._proofs_seen.first_use(checked, self._clock()):
            raise InvalidDPoPProof("The DPoP proof was used before.")
        return claims


class TokenUser(BaseUser):
    """`request.user` for a request with a valid token."""

    def __init__(self, claims: AccessClaims, token: str = "") -> None:
        self.claims = claims
        self._token = token

    def __repr__(self) -> str:
        return f"TokenUser(subject={self.claims.subject!r})"  # never the token

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.claims.subject

    @property
    def identity(self) -> str:
        return self.claims.subject


class BearerMiddleware:
    """ASGI middleware: a valid bearer token for every request, unless its path is public.

    Sets `request.user` (a `TokenUser`, or anonymous on a public path without a token) and
    `request.auth.scopes`. A token presented on a public path is still checked: a bad one is
    refused there too, so a client learns that it must refresh. Answers the RFC 9728 metadata
    itself, to anyone, token or not.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        public: Iterable[str] = (),
        base_url: str | None = None,
        metadata: ResourceMetadata | None = None,
    ) -> None:
        paths = _public_paths(public)
        self._app, self._verifier = app, verifier
        self._metadata = metadata or ResourceMetadata(verifier.audience, (verifier.issuer,))
        self._base_url = base_url.rstrip("/") if base_url else None
        self._exact = frozenset(path for path in paths if not path.endswith("/"))
        self._prefixes = tuple(path for path in paths if path.endswith("/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        if scope["type"] == "http" and _route_path(scope) == self._metadata.path:
            await _metadata_response(self._metadata, scope["method"])(scope, receive, send)
            return
        # requires_scope names the metadata in its own refusals.
        scope[_METADATA_KEY] = self._metadata.url
        headers = Headers(scope=scope)
        try:
            scope["auth"], scope["user"] = await self._authenticate(scope, headers)
        except (MissingToken, InvalidToken, InvalidDPoPProof, Unavailable) as error:
            scheme = "dpop" if headers.get("authorization", "")[:5].lower() == "dpop " else "bearer"
            response = refusal(error, scheme, self._metadata.url)
            if scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
                await response(scope, receive, send)
            else:
                # Without the denial-response extension a handshake can only be closed: 1008 is
                # "policy violation", and the server answers the upgrade with 403.
                await send({"type": "websocket.close", "code": 1008})
            return
        nonce = self._verifier.current_nonce() if "dpop" in headers else None
        if nonce is None:
            await self._app(scope, receive, send)
            return

        # RFC 9449 §9: the next nonce in a success too, so a client is not refused once per
        # rotation to learn it.
        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"dpop-nonce", nonce.encode("ascii")),
                ]
            await send(message)

        await self._app(scope, receive, send_with_nonce)

    async def _authenticate(
        self, scope: Scope, headers: Headers
    ) -> tuple[AuthCredentials, BaseUser]:
        try:
            scheme, token = authorization(headers)
        except MissingToken:
            if self.is_public(_route_path(scope)):
                return AuthCredentials(), UnauthenticatedUser()
            raise
        proofs = headers.getlist("dpop")
        if len(proofs) > 1:
            raise InvalidDPoPProof("Send one DPoP proof.")
        claims = await self._verifier.verify_request(
            scheme,
            token,
            method=scope.get("method", "GET"),
            url=self._request_url(scope),
            proof=proofs[0] if proofs else None,
        )
        return AuthCredentials(claims.scope.split()), TokenUser(claims, token)

    def _request_url(self, scope: Scope) -> str:
        """The URL a client names in a proof's `htu`: `base_url` and the path when a proxy
        stands in front, else what the request says (its scheme and Host)."""
        if self._base_url is None:
            return str(HTTPConnection(scope).url)
        return self._base_url + str(scope["path"])

    def is_public(self, path: str) -> bool:
        """Whether `path` (relative to the app's root path) is served without a token."""
        return path in self._exact or path.startswith(self._prefixes)


def protect(
    verifier: TokenVerifier,
    *,
    public: Iterable[str] = (),
    base_url: str | None = None,
    scopes_supported: Iterable[str] = (),
    authorization_servers: Iterable[str] | None = None,
) -> Middleware:
    """The middleware that refuses every request of an app without a valid token of `verifier`.

    `public` lists what is served without a token: an exact path ("/healthz"), or a prefix when
    the entry ends in "/" ("/docs/" opens "/docs/" and everything under it, not "/docs"). Paths
    are compared as Starlette routes them: decoded, case-sensitive, relative to the app's
    `root_path`. Raises `ValueError` for an entry that does not start with "/".

    `base_url` is the app's URL as clients call it (`https://api.example`), for DPoP proofs when
    a proxy changes the scheme or host the app sees.

    The RFC 9728 metadata names the verifier's audience as the `resource`, the
    `authorization_servers` (by default the verifier's issuer) and the `scopes_supported` that
    this API's routes ask for (listed only when given).
    """
    scopes = (scopes_supported,) if isinstance(scopes_supported, str) else tuple(scopes_supported)
    if any(not isinstance(scope, str) or not _SCOPE_TOKEN.fullmatch(scope) for scope in scopes):
        raise ValueError(f"scopes_supported lists RFC 6749 scope tokens: {scopes!r}")
    servers = (verifier.issuer,) if authorization_servers is None else tuple(authorization_servers)
    if not servers or any(not isinstance(server, str) or not server for server in servers):
        raise ValueError("authorization_servers lists at least one issuer")
    metadata = ResourceMetadata(verifier.audience, servers, scopes)
    return Middleware(
        BearerMiddleware,
        verifier=verifier,
        public=_public_paths(public),
        base_url=base_url,
        metadata=metadata,
    )


def requires_scope(
    *scopes: str,
) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Guard an endpoint: 403 insufficient_scope unless the token has every one of `scopes`.

    Under `protect`, the request already carries a valid token; on a public path without one,
    the answer is 401 missing_token.
    """

    def decorate(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            metadata = request.scope.get(_METADATA_KEY)
            if not request.user.is_authenticated:
                return refusal(MissingToken(), resource_metadata=metadata)
            if any(scope not in request.auth.scopes for scope in scopes):
                return refusal(InsufficientScope(scopes), resource_metadata=metadata)
            return await endpoint(request)

        return guarded

    return decorate


def requires_aal2(
    *, max_age: int | None = None, clock: Clock = utc_now
) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Guard an endpoint: RFC 9470's 401 insufficient_user_authentication (a challenge with
    `acr_values="aal2"` and `max_age`) unless the token's `acr` is aal2 and, with `max_age`,
    its `auth_time` is at most `max_age` seconds old. The client answers it with a step-up
    (the service's POST /mfa/challenge) and retries.

    Under `protect`, the request already carries a valid token; on a public path without one,
    the answer is 401 missing_token.
    """
    if max_age is not None and max_age < 0:
        raise ValueError("max_age is a number of seconds, 0 or more")

    def decorate(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            if not request.user.is_authenticated:
                return refusal(MissingToken())
            claims = token_claims(request)
            fresh = max_age is None or (
                claims.auth_time is not None
                and int(clock().timestamp()) - claims.auth_time <= max_age
            )
            if claims.acr != "aal2" or not fresh:
                return refusal(InsufficientUserAuthentication(acr_values="aal2", max_age=max_age))
            return await endpoint(request)

        return guarded

    return decorate


def token_claims(request: HTTPConnection) -> AccessClaims:
    """The verified claims of the request's token; raise `MissingToken` on an anonymous one."""
    user = request.user
    if not isinstance(user, TokenUser):
        raise MissingToken()
    return user.claims


def _metadata_response(metadata: ResourceMetadata, method: str) -> Response:
    if method not in ("GET", "HEAD"):
        return JSONResponse(
            {"error": "method_not_allowed", "error_description": "Use GET."},
            status_code=405,
            headers={"Allow": "GET, HEAD"},
        )
    # Public and the same for everyone: caches may keep it.
    return JSONResponse(metadata.document(), headers={"Cache-Control": "public, max-age=300"})


def presented_token(request: HTTPConnection) -> str:
    """The verified token the request carried: the subject token of a token exchange
    (`tokenrota.httpx_auth.TokenExchange`). Raise `MissingToken` on an anonymous request."""
    user = request.user
    if not isinstance(user, TokenUser):
        raise MissingToken()
    return user._token


def _public_paths(public: Iterable[str]) -> tuple[str, ...]:
    # Checked when protect() is called, not at the app's first request.
    paths = (public,) if isinstance(public, str) else tuple(public)
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a public path starts with '/': {path!r}")
    return paths


def _route_path(scope: Scope) -> str:
    """The path the app routes on: below its `root_path` when it is mounted (as Starlette's)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) :][:1] in ("/", ""):
        return path[len(root_path) :]
    return path


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
