"""A chain of three real processes: the service, and two resource servers built with the library
(tests/resource_server.py), A and B, each its own resource. A user's token for A opens A only;
A calls B on the user's behalf with a token exchanged for B; B, granted no exchange, cannot
pass the user on; a logout ends the exchanged token at B through the revocation feed."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
from tokenrota_server.config import Settings
from tokenrota_server.db.resources import GrantKind

from tests.audience_support import ACCESS_TOKEN_TYPE, EXCHANGE, create_resource, grant
from tests.e2e.test_revocation_fleet import SECRETS, service, until_caught_up, until_refused
from tests.oauth_support import FEED_SCOPE, basic, claims_of, create_client
from tests.processes import (
    clean_environment,
    free_port,
    started,
    stop_gracefully,
    wait_until_answering,
)
from tests.support import PASSWORD, PROJECT_ROOT


@contextlib.contextmanager
def resource_server(
    port: int, tmp_path: Path, name: str, **environment: str
) -> Iterator[subprocess.Popen[bytes]]:
    """tests/resource_server.py on `port` with `environment`; stopped after."""
    command = [sys.executable, "-m", "tests.resource_server"]
    log = tmp_path / f"{name}.log"
    env = clean_environment(
        PORT=str(port),
        FEED_WAIT="5",
        ACCESS_TOKEN_SECRET=SECRETS["ACCESS_TOKEN_SECRET"],
        **environment,
    )
    with started(command, cwd=PROJECT_ROOT, env=env, log=log) as process:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/follower", process, seconds=60, log=log)
            yield process
        finally:
            stop_gracefully(process, seconds=5)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_for_a_goes_to_b_only_by_exchange_and_dies_with_the_session(
    database_url: str, db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    """Three processes: A's token works at A, not at B nor at the service's /sessions; A calls
    B with an exchanged token (act = A's client); B, without a grant, cannot exchange further;
    after a logout, B refuses the exchanged token once its feed has it."""
    a_port, b_port = free_port(), free_port()
    a_uri, b_uri = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    a_id, a_secret = await create_client(db, settings, scope=FEED_SCOPE, name="a")
    b_id, b_secret = await create_client(db, settings, scope=FEED_SCOPE, name="b")
    admin = await create_client(db, settings, scope="admin", name="ops")
    email = f"chain-{secrets.token_hex(4)}@example.com"

    with service(database_url, tmp_path, "service") as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            token = await http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(*admin)
            )
            admin_header = bearer(token.json()["access_token"])
            await create_resource(http, admin_header, a_uri, "a:read")
            await create_resource(http, admin_header, b_uri, "b:read")
            await grant(db, a_id, a_uri, GrantKind.SERVES)
            await grant(db, a_id, b_uri, GrantKind.EXCHANGE, "b:read")
            await grant(db, b_id, b_uri, GrantKind.SERVES)  # and no exchange onward
            await http.post("/register", json={"email": email, "password": PASSWORD})
            login = await http.post(
                "/login", json={"email": email, "password": PASSWORD, "resource": a_uri}
            )
            pair = login.json()
            user_token = pair["access_token"]

            with (
                resource_server(
                    a_port,
                    tmp_path,
                    "a",
                    SERVICE_URL=base,
                    CLIENT_ID=a_id,
                    CLIENT_SECRET=a_secret,
                    TOKEN_AUDIENCE=a_uri,
                    NEXT_URL=b_uri,
                    NEXT_RESOURCE=b_uri,
                ),
                resource_server(
                    b_port,
                    tmp_path,
                    "b",
                    SERVICE_URL=base,
                    CLIENT_ID=b_id,
                    CLIENT_SECRET=b_secret,
                    TOKEN_AUDIENCE=b_uri,
                    NEXT_URL=a_uri,
                    NEXT_RESOURCE=a_uri,
                ),
            ):
                await until_caught_up(http, a_uri)
                await until_caught_up(http, b_uri)
                at_a = await http.get(f"{a_uri}/whoami", headers=bearer(user_token))
                at_b = await http.get(f"{b_uri}/whoami", headers=bearer(user_token))
                at_sessions = await http.get("/sessions", headers=bearer(user_token))
                metadata = await http.get(f"{a_uri}/.well-known/oauth-protected-resource")
                anonymous = await http.get(f"{a_uri}/whoami")
                through_a = await http.get(f"{a_uri}/next", headers=bearer(user_token))
                # What A's library did, done by hand: the token B received.
                exchanged = await http.post(
                    "/oauth/token",
                    data={
                        "grant_type": EXCHANGE,
                        "subject_token": user_token,
                        "subject_token_type": ACCESS_TOKEN_TYPE,
                        "resource": b_uri,
                    },
                    headers=basic(a_id, a_secret),
                )
                b_token = exchanged.json()["access_token"]
                through_b = await http.get(f"{b_uri}/next", headers=bearer(b_token))
                before_logout = await http.get(f"{b_uri}/whoami", headers=bearer(b_token))

                await http.post("/logout", json={"refresh_token": pair["refresh_token"]})
                at_b_after = await until_refused(http, b_uri, b_token)
                at_a_after = await until_refused(http, a_uri, user_token)

    user_id = claims_of(user_token)["sub"]
    assert login.status_code == 200
    assert at_a.status_code == 200
    assert at_a.json() == {"sub": user_id, "aud": a_uri, "act": None}
    assert (at_b.status_code, at_b.json()["error"]) == (403, "invalid_token")
    assert (at_sessions.status_code, at_sessions.json()["error"]) == (403, "invalid_token")
    assert metadata.json()["resource"] == a_uri
    assert metadata.json()["authorization_servers"] == [settings.token_issuer]
    assert anonymous.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{a_uri}/.well-known/oauth-protected-resource"'
    )
    assert through_a.status_code == 200
    assert through_a.json() == {"sub": user_id, "aud": b_uri, "act": {"sub": a_id}}
    assert claims_of(b_token)["act"] == {"sub": a_id}
    assert before_logout.status_code == 200
    assert (through_b.status_code, through_b.json()) == (
        502,
        {"exchange": 400, "error": "invalid_target"},
    )
    assert at_b_after.status_code == 403
    assert "session_revoked" in at_b_after.json()["error_description"]
    assert at_a_after.status_code == 403
