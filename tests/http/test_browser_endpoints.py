"""The JS client and the demo page are served from the package; the demo is off in production."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import FakeClock, Serve

# Production requires TOKEN_ISSUER to be the service's https URL.
ISSUER = "https://auth.example"


async def test_auth_client_is_an_es_module_with_the_documented_interface(
    client: httpx.AsyncClient,
) -> None:
    """GET /auth-client.js: JavaScript, exporting createAuthClient with its five methods."""
    response = await client.get("/auth-client.js")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    source = response.text
    assert "export function createAuthClient" in source
    for method in ("async login(", "async fetch(", "async logout(", "onLogout("):
        assert method in source
    assert "localStorage" not in source.replace("never localStorage", "")
    assert "navigator.locks" in source
    assert "BroadcastChannel" in source


@pytest.mark.parametrize("path", ["/demo", "/demo.js", "/demo.css"])
async def test_demo_is_served_with_a_strict_content_security_policy(
    client: httpx.AsyncClient, path: str
) -> None:
    """The demo loads only its own files: script-src 'self', no inline script."""
    response = await client.get(path)

    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/demo", "/demo.js", "/demo.css"])
async def test_demo_is_off_in_production(
    make_settings: Any, clock: FakeClock, path: str, serve: Serve
) -> None:
    """ENV=production: 404 not_found, while the JS client is still served."""
    async with serve(make_settings(env="production", token_issuer=ISSUER), clock) as client:
        response = await client.get(path)
        script = await client.get("/auth-client.js")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert script.status_code == 200
