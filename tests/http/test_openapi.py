"""/openapi.json describes exactly what the app serves, validly; /docs works offline."""

from __future__ import annotations

import re
from dataclasses import replace
from importlib import metadata
from typing import Any

import httpx
from openapi_spec_validator import validate
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings
from tokenrota_server.http.openapi import served_operations, undescribed_routes

from tests.support import FakeClock, Serve

# Production requires TOKEN_ISSUER to be the service's https URL.
ISSUER = "https://auth.example"


async def test_every_served_route_is_described(settings: Settings) -> None:
    """A route added without an entry in tokenrota_server.http.openapi_operations fails here."""
    app = create_app(replace(settings, docs_enabled=True))

    assert undescribed_routes(app.routes) == []


async def test_the_document_lists_exactly_the_served_routes(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Paths and methods in the document are the router's, no more and no fewer."""
    document = (await client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = set(served_operations(create_app(settings).routes))

    assert documented == served
    assert {("GET", "/profile"), ("GET", "/metrics"), ("GET", "/docs")} <= documented


async def test_the_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    """openapi-spec-validator accepts it; every operation lists its errors with their codes."""
    response = await client.get("/openapi.json")
    document = response.json()

    validate(document)
    assert document["openapi"] == "3.1.0"
    assert set(document["components"]["securitySchemes"]) >= {
        "bearer",
        "refreshCookie",
        "clientBasic",
    }
    login = document["paths"]["/login"]["post"]
    assert "requestBody" in login
    assert set(login["responses"]) >= {"200", "400", "401", "413", "415", "422", "429", "503"}
    codes = login["responses"]["401"]["content"]["application/json"]["schema"]["allOf"][1]
    assert codes["properties"]["error"]["enum"] == ["invalid_credentials"]
    assert document["paths"]["/profile"]["get"]["security"] == [{"bearer": []}]


async def test_docs_are_served_from_the_bundled_assets(
    make_settings: Any, clock: FakeClock, serve: Serve
) -> None:
    """The page and every file it loads come from this service; no outside URL."""
    async with serve(make_settings(docs_enabled=True), clock) as client:
        page = await client.get("/docs")
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        loaded = [await client.get(source) for source in sources]

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert len(sources) == 3
    assert all(source.startswith("/docs/assets/") for source in sources)
    assert [response.status_code for response in loaded] == [200, 200, 200]
    assert "SwaggerUIBundle" in loaded[1].text
    assert "/openapi.json" in loaded[2].text


async def test_docs_are_off_in_production_unless_enabled(
    make_settings: Any, clock: FakeClock, serve: Serve
) -> None:
    """ENV=production hides /docs; DOCS_ENABLED=true brings it back. /openapi.json stays."""
    async with serve(make_settings(env="production", token_issuer=ISSUER), clock) as client:
        hidden = await client.get("/docs")
        schema = await client.get("/openapi.json")
        documented = set(schema.json()["paths"])
    async with serve(
        make_settings(env="production", token_issuer=ISSUER, docs_enabled=True), clock
    ) as client:
        enabled = await client.get("/docs")

    assert hidden.status_code == 404
    assert schema.status_code == 200
    assert "/docs" not in documented
    assert enabled.status_code == 200


async def test_the_document_carries_the_package_version(client: httpx.AsyncClient) -> None:
    """info.version is the installed package's version, not a number kept by hand."""
    document = (await client.get("/openapi.json")).json()

    assert document["info"]["version"] == metadata.version("tokenrota")
