"""A resource server's identity: its URI is the one audience it accepts (RFC 8707), and it
publishes RFC 9728 metadata that every refusal names in `WWW-Authenticate`."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.dpop import thumbprint
from tokenrota.resource import MAX_URI_LENGTH, ResourceMetadata, resource_uri
from tokenrota.verify import TokenVerifier, protect, requires_scope, token_claims

from tests import forge
from tests.dpop_support import NOW, Signer, stamp
from tests.support import FakeClock

ISSUER = "https://auth.example"
ORDERS = "https://orders.example"
BILLING = "https://billing.example/api"
OLD_SHARED = "token-service"  # the audience of every token before resources
ORDERS_METADATA = "https://orders.example/.well-known/oauth-protected-resource"


def verifier(secret: str, audience: str = ORDERS, **options: Any) -> TokenVerifier:
    clock = FakeClock()
    clock.now = NOW
    return TokenVerifier(issuer=ISSUER, audience=audience, secret=secret, clock=clock, **options)


def api(token_verifier: TokenVerifier, **options: Any) -> httpx.AsyncClient:
    """/data needs scope read; /open is public but its route asks for read."""

    @requires_scope("read")
    async def data(request: Request) -> Response:
        return JSONResponse({"sub": token_claims(request).subject})

    app = Starlette(
        routes=[Route("/data", data), Route("/open", data)],
        middleware=[protect(token_verifier, public=["/open"], **options)],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def token_for(secret: str, audience: Any, scope: str = "read", **changes: Any) -> str:
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": stamp(NOW),
        "exp": stamp(NOW) + 900,
        "jti": uuid.uuid4().hex,
        "email": "someone@example.com",
        "scope": scope,
        **changes,
    }
    return forge.token(claims, secret)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


# -- the audience ----------------------------------------------------------------------------


async def test_only_a_token_for_this_resource_passes(secret: str) -> None:
    """A token minted for another API, for the service's own routes (the old shared audience),
    or for several audiences at once is refused; one for this resource's URI passes."""
    refused = {
        "another API": token_for(secret, BILLING),
        "the service's own": token_for(secret, OLD_SHARED),
        "a prefix of ours": token_for(secret, "https://orders.example.evil"),
        "ours and another": token_for(secret, [ORDERS, BILLING]),
        "ours with a slash": token_for(secret, ORDERS + "/"),
    }
    async with api(verifier(secret)) as http:
        ours = await http.get("/data", headers=bearer(token_for(secret, ORDERS)))
        answers = {
            name: (r.status_code, r.json()["error"])
            for name, value in refused.items()
            for r in [await http.get("/data", headers=bearer(value))]
        }

    assert ours.status_code == 200
    assert answers == dict.fromkeys(refused, (403, "invalid_token"))


async def test_previous_audience_bridges_a_migration_and_only_it(secret: str) -> None:
    """With previous_audience= the old shared audience still passes (callers not yet asking for
    a resource); another API's token still does not. Without it, the old token is refused."""
    old, other = token_for(secret, OLD_SHARED), token_for(secret, BILLING)
    async with api(verifier(secret, previous_audience=OLD_SHARED)) as http:
        bridged = [await http.get("/data", headers=bearer(t)) for t in (old, other)]
    async with api(verifier(secret)) as http:
        after = await http.get("/data", headers=bearer(old))

    assert [r.status_code for r in bridged] == [200, 403]
    assert after.status_code == 403


@pytest.mark.parametrize(
    "audience",
    [
        OLD_SHARED,
        "",
        "/orders",
        "orders.example",
        "//orders.example",
        "https://",
        "https:///path",
        "ftp://orders.example",
        "urn:example:orders",
        "https://orders.example#frag",
        "https://orders.example/#",
        "https://orders.example/?q=1",
        "https://orders.example?",
        "https://user@orders.example",
        "https://user:pass@orders.example",
        "https://orders.example:99999",
        "https://orders.example:port",
        "https://orders.example/a b",
        "https://ordérs.example",
        "https://orders.example/\n",
        "https://orders.example/" + "a" * MAX_URI_LENGTH,
    ],
)
def test_an_audience_that_is_not_a_resource_uri_is_refused_at_construction(
    audience: str,
) -> None:
    """The break of the migration, with what to do: at start-up, never at the first request."""
    with pytest.raises(ValueError, match="this resource server's own URI"):
        TokenVerifier(issuer=ISSUER, audience=audience, secret="s" * 32)


@pytest.mark.parametrize(
    "audience",
    [
        "https://orders.example",
        "https://orders.example/",
        "https://orders.example/api/v1",
        "http://127.0.0.1:8001",
        "https://[::1]:8443/api",
        "https://orders.example/" + "a" * (MAX_URI_LENGTH - len("https://orders.example/")),
    ],
)
def test_resource_uris_at_the_edges_of_the_grammar_are_accepted(audience: str) -> None:
    assert resource_uri(audience) == audience
    assert TokenVerifier(issuer=ISSUER, audience=audience, secret="s" * 32).audience == audience


def test_previous_audience_must_differ_and_be_given() -> None:
    for previous in ("", ORDERS):
        with pytest.raises(ValueError, match="previous_audience"):
            TokenVerifier(issuer=ISSUER, audience=ORDERS, previous_audience=previous, secret="s")


# -- the metadata ------------------------------------------------------------------------------


async def test_the_metadata_is_served_to_anyone_at_the_well_known_path(secret: str) -> None:
    """RFC 9728 §3: no token needed (none is public here but /open), a bad one ignored, the
    document names this resource, the issuer and the scopes the app was told of."""
    token_verifier = verifier(secret)
    async with api(token_verifier, scopes_supported=["read", "write"]) as http:
        anonymous = await http.get("/.well-known/oauth-protected-resource")
        garbage = await http.get("/.well-known/oauth-protected-resource", headers=bearer("x.y.z"))
        posted = await http.post("/.well-known/oauth-protected-resource")
        below = await http.get("/.well-known/oauth-protected-resource/more")

    assert anonymous.status_code == garbage.status_code == 200
    assert (
        anonymous.json()
        == garbage.json()
        == {
            "resource": ORDERS,
            "authorization_servers": [ISSUER],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["read", "write"],
        }
    )
    assert anonymous.headers["cache-control"] == "public, max-age=300"
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    # Any other path stays closed: the metadata opens nothing else.
    assert below.status_code == 401


async def test_a_resource_with_a_path_is_described_below_the_well_known_prefix(
    secret: str,
) -> None:
    """RFC 9728 §3.1: the well-known suffix goes between the host and the path."""
    async with api(
        verifier(secret, BILLING), authorization_servers=[ISSUER, "https://b.example"]
    ) as http:
        described = await http.get("/.well-known/oauth-protected-resource/api")
        bare = await http.get("/.well-known/oauth-protected-resource")
        refused = await http.get("/data")

    assert described.json()["resource"] == BILLING
    assert described.json()["authorization_servers"] == [ISSUER, "https://b.example"]
    assert "scopes_supported" not in described.json()
    assert bare.status_code == 401
    assert refused.headers["www-authenticate"] == (
        'Bearer resource_metadata="https://billing.example/.well-known/oauth-protected-resource/api"'
    )
    assert (
        ResourceMetadata(BILLING + "/", (ISSUER,)).url == ResourceMetadata(BILLING, (ISSUER,)).url
    )


async def test_every_refusal_names_the_metadata(secret: str) -> None:
    """401 missing, 403 invalid or expired or another audience's, 403 insufficient_scope (from
    requires_scope, on a protected path and on a public one), 401 for a bad DPoP proof: each
    challenge carries resource_metadata, so a client can find what to ask for."""
    signer = Signer("ES256")
    bound = token_for(secret, ORDERS, cnf={"jkt": thumbprint(signer.jwk)})
    requests = {
        "no token": ("/data", {}),
        "garbage": ("/data", bearer("not.a.token")),
        "expired": ("/data", bearer(token_for(secret, ORDERS, exp=stamp(NOW) - 600))),
        "another audience": ("/data", bearer(token_for(secret, BILLING))),
        "no scope": ("/data", bearer(token_for(secret, ORDERS, scope=""))),
        "public, no token": ("/open", {}),
        "public, no scope": ("/open", bearer(token_for(secret, ORDERS, scope=""))),
        "bad proof": ("/data", {"Authorization": f"DPoP {bound}", "DPoP": "not.a.proof"}),
    }
    async with api(verifier(secret)) as http:
        challenges = {
            name: (r.status_code, r.headers.get("www-authenticate", ""))
            for name, (path, headers) in requests.items()
            for r in [await http.get(path, headers=headers)]
        }

    expected = f'resource_metadata="{ORDERS_METADATA}"'
    assert {name: status for name, (status, _) in challenges.items()} == {
        "no token": 401,
        "garbage": 403,
        "expired": 403,
        "another audience": 403,
        "no scope": 403,
        "public, no token": 401,
        "public, no scope": 403,
        "bad proof": 401,
    }
    assert {name: c.endswith(expected) for name, (_, c) in challenges.items()} == dict.fromkeys(
        requests, True
    )
    assert challenges["no token"][1] == f"Bearer {expected}"


def test_protect_checks_what_it_will_publish() -> None:
    """Scopes are RFC 6749 scope tokens; at least one authorization server is named."""
    token_verifier = TokenVerifier(issuer=ISSUER, audience=ORDERS, secret="s" * 32)
    for scopes in (["two words"], ['quo"te'], [""], ["back\\slash"], [7]):
        with pytest.raises(ValueError, match="scope tokens"):
            protect(token_verifier, scopes_supported=scopes)
    for servers in ([], [""]):
        with pytest.raises(ValueError, match="authorization_servers"):
            protect(token_verifier, authorization_servers=servers)
    assert protect(token_verifier, scopes_supported="read").kwargs["metadata"].scopes_supported == (
        "read",
    )
