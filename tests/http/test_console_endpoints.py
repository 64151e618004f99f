"""The operators' console is served from the package under a strict Content Security Policy, and
renders what users typed as text only."""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest
from tokenrota_server.config import Settings
from tokenrota_server.db.audit import AuditAction

CONSOLE = resources.files("tokenrota_server").joinpath("static", "console")
MODULES = sorted(item.name for item in CONSOLE.iterdir() if item.name.endswith(".js"))


async def test_the_page_loads_only_its_own_files_and_may_not_be_framed(
    client: httpx.AsyncClient,
) -> None:
    """GET /console: HTML under a CSP with no inline script or style, no framing."""
    response = await client.get("/console")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ):
        assert directive in policy
    assert "unsafe" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    # Only external scripts and styles: nothing inline for the CSP to refuse.
    assert re.findall(r"<script[^>]*>", response.text) == [
        '<script type="module" src="/console/app.js">'
    ]
    assert "<style" not in response.text
    assert " style=" not in response.text


@pytest.mark.parametrize("name", [*MODULES, "console.css"])
async def test_every_asset_is_served_with_its_type_and_the_policy(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/console/{name}")

    assert response.status_code == 200
    expected = "text/css" if name.endswith(".css") else "text/javascript"
    assert response.headers["content-type"] == f"{expected}; charset=utf-8"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.content == CONSOLE.joinpath(name).read_bytes()


@pytest.mark.parametrize(
    "name", ["index.html", "missing.js", "app", "..%2Fdemo.js", "%2E%2E%2Fapp.py", "app.py"]
)
async def test_anything_else_under_console_is_not_found(
    client: httpx.AsyncClient, name: str
) -> None:
    """Only the modules and the style, by exact name: no other file, no path out."""
    response = await client.get(f"/console/{name}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_the_config_names_the_admin_api_audience_and_the_audit_actions(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/console/config.json")

    assert response.status_code == 200
    assert response.json() == {
        "admin_audience": settings.admin_api_audience,
        "audit_actions": sorted(action.value for action in AuditAction),
    }


@pytest.mark.parametrize("name", MODULES)
def test_no_module_writes_markup_or_stores_a_token(name: str) -> None:
    """What users typed is rendered with textContent and text nodes: no innerHTML and the like;
    and no token goes to any storage."""
    source = CONSOLE.joinpath(name).read_text()

    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, f"{name} uses {sink}"
    for storage in ("localStorage", "sessionStorage", "indexedDB", "document.cookie"):
        assert storage not in source, f"{name} uses {storage}"
