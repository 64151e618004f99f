"""Interop: DPoP proofs made in Node by panva's `dpop` package (npm), an implementation we did not
write, are accepted at /oauth/token (client_credentials) and by a resource server built with
tokenrota.verify; a proof by another of its keys is refused there.

The package is installed once per run from the npm registry into a temporary directory (npm's
own cache makes later runs quick); the test fails, never skips, without node, npm or the registry.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.dpop import thumbprint
from tokenrota.verify import TokenVerifier, protect, token_claims
from tokenrota_server.config import Settings

from tests.e2e.test_js_package import tool
from tests.oauth_support import basic, claims_of
from tests.support import CreateClient, Serve

# One worker runs the module, so the package is installed once.
pytestmark = pytest.mark.xdist_group("dpop_interop")
DPOP_PACKAGE = "dpop@2.1.2"  # pinned: the proofs of one known release
API = "https://api.example"
# Reads one request a line ({alg, htm, htu, accessToken?}), answers {proof} a line; one key per
# algorithm for the process's life, made (non-extractable) by the package.
PROVER = """
import * as DPoP from "dpop";
import readline from "node:readline";

const keys = new Map();
for await (const line of readline.createInterface({ input: process.stdin })) {
  const { alg, htm, htu, accessToken } = JSON.parse(line);
  if (!keys.has(alg)) keys.set(alg, await DPoP.generateKeyPair(alg));
  const ath = accessToken ?? undefined; // the package hashes it into ath
  const proof = await DPoP.generateProof(keys.get(alg), htu, htm, undefined, ath);
  process.stdout.write(JSON.stringify({ proof }) + "\\n");
}
"""


@pytest.fixture(scope="session")
def prover_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prover.mjs in a directory where `dpop` is installed from the registry."""
    directory = tmp_path_factory.mktemp("dpop-interop")
    npm = tool("npm")
    install = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", DPOP_PACKAGE]
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        install, cwd=directory, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"npm install {DPOP_PACKAGE} failed: {result.stderr}"
    script = directory / "prover.mjs"
    script.write_text(PROVER)
    return script


class Prover:
    """The Node process that signs proofs with the package."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def proof(self, alg: str, htm: str, htu: str, access_token: str | None = None) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        request = {"alg": alg, "htm": htm, "htu": htu, "accessToken": access_token}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        assert line, "the prover stopped"
        proof: str = json.loads(line)["proof"]
        return proof


@pytest.fixture(name="prover")
async def prover_fixture(prover_script: Path) -> AsyncIterator[Prover]:
    """A running prover, closed (its stdin ended) after the test."""
    process = await asyncio.create_subprocess_exec(
        tool("node"),
        str(prover_script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=prover_script.parent,
    )
    try:
        yield Prover(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()


def real_now() -> datetime:
    """The service's clock here: the package stamps its proofs with the real time."""
    return datetime.now(UTC)


def jwk_of(proof: str) -> dict[str, Any]:
    header = proof.split(".")[0]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
    )
    return decoded["jwk"]


@pytest.mark.parametrize("alg", ["ES256", "Ed25519", "PS256", "RS256"])
async def test_proofs_by_the_dpop_package_bind_a_token_and_pass_the_verifier(
    alg: str,
    prover: Prover,
    settings: Settings,
    db: asyncpg.Connection,
    serve: Serve,
    create_client: CreateClient,
) -> None:
    """client_credentials with the package's proof: a DPoP token naming its key; the token with
    the package's proof (ath) for a GET at an API built with tokenrota.verify: 200; with a proof
    by the package's other key: 401 invalid_dpop_proof."""
    credentials = await create_client(db, settings)
    token_url = f"{settings.public_base_url}/oauth/token"

    async def data(request: Request) -> Response:
        return JSONResponse({"client_id": token_claims(request).client_id})

    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
    )
    api_app = Starlette(routes=[Route("/data", data)], middleware=[protect(verifier)])
    async with (
        serve(settings, real_now) as service,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app), base_url=API) as api,
    ):
        minting = await prover.proof(alg, "POST", token_url)
        answer = await service.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={**basic(*credentials), "DPoP": minting},
        )
        token = answer.json()["access_token"]
        accepted = await api.get(
            "/data",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": await prover.proof(alg, "GET", f"{API}/data", token),
            },
        )
        other = "ES256" if alg != "ES256" else "PS256"
        foreign = await api.get(
            "/data",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": await prover.proof(other, "GET", f"{API}/data", token),
            },
        )

    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"
    assert claims_of(token)["cnf"] == {"jkt": thumbprint(jwk_of(minting))}
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"client_id": credentials[0]}
    assert foreign.status_code == 401
    assert 'error="invalid_dpop_proof"' in foreign.headers["www-authenticate"]
