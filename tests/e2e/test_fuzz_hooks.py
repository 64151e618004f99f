"""fuzz/hooks.py: the fuzzer's positive cases at the DPoP operations carry a real DPoP proof for
the instance's URL (what no schema can spell), its negative cases what they drew; fuzz/live.py
sends every other positive case with live values, and never a TOTP code twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from schemathesis.generation import GenerationMode
from tokenrota.dpop import check_proof
from tokenrota_server import totp
from tokenrota_server.email_address import normalize_email

from fuzz import hooks, live

BASE_URL = "http://127.0.0.1:34567"


def case(method: str, path: str, mode: GenerationMode, dpop: str | None) -> Any:
    meta = SimpleNamespace(
        generation=SimpleNamespace(mode=mode), phase=SimpleNamespace(name="fuzzing")
    )
    headers = {"DPoP": dpop} if dpop is not None else {}
    return SimpleNamespace(
        method=method, operation=SimpleNamespace(path=path), meta=meta, headers=headers, body=None
    )


@pytest.mark.parametrize(
    "path", ["/login", "/refresh", "/oauth/token", "/login/mfa", "/passkeys/login"]
)
def test_a_positive_case_sends_a_real_proof(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv("FUZZ_BASE_URL", BASE_URL)
    drawn = case("post", path, GenerationMode.POSITIVE, "a.b.c")

    hooks.before_call(None, drawn)  # type: ignore[arg-type]

    checked = check_proof(
        drawn.headers["DPoP"], method="POST", url=BASE_URL + path, now=datetime.now(UTC)
    )
    assert checked.jkt == hooks.DPOP_KEY.jkt


def test_negative_cases_and_other_operations_keep_what_they_drew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FUZZ_BASE_URL", BASE_URL)
    drawn = [
        case("post", "/login", GenerationMode.NEGATIVE, "a.b.c"),
        case("get", "/profile", GenerationMode.POSITIVE, "a.b.c"),
        case("post", "/login", GenerationMode.POSITIVE, None),
    ]

    for each in drawn:
        hooks.before_call(None, each)  # type: ignore[arg-type]

    assert [each.headers.get("DPoP") for each in drawn] == ["a.b.c", "a.b.c", None]


def test_every_other_positive_case_of_an_operation_goes_live() -> None:
    """fuzz/live.py: of the positive cases of POST /admin/users in a phase, every other one
    (the first included) is sent with a fresh valid email instead of what it drew."""
    drawn = {"email": "not one mailbox", "roles": ["?"]}
    live._seen.clear()

    def made_live(phase: str) -> Any:
        drawn_case = SimpleNamespace(body=dict(drawn))
        live.make_live(("POST", "/admin/users"), phase, drawn_case)
        return None if drawn_case.body == drawn else drawn_case.body

    bodies = [made_live("fuzzing") for _ in range(4)]
    in_another_phase = made_live("coverage")

    assert bodies[1] is None
    assert bodies[3] is None
    assert in_another_phase is not None  # each phase's first goes live
    for body in (bodies[0], bodies[2]):
        assert body is not None
        assert set(body) == {"email"}
        assert normalize_email(body["email"]) == body["email"]
    assert bodies[0] != bodies[2]


def test_a_live_totp_code_is_never_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each code fuzz/live.py hands out is of a later step than the last (the service takes a
    step's code once), and none once the steps it would accept are spent."""
    secret = totp.new_secret()
    monkeypatch.setenv("FUZZ_TEST_SECRET", secret)
    monkeypatch.setenv("FUZZ_TEST_SPENT", str(totp.step_of(datetime.now(UTC)) - 5))

    codes = [live._totp_code("FUZZ_TEST_SECRET", "FUZZ_TEST_SPENT") for _ in range(6)]

    handed_out = [code for code in codes if code is not None]
    assert 3 <= len(handed_out) <= 4  # this step, one either side (a fourth if a step began)
    assert len(set(handed_out)) == len(handed_out)
    assert codes[-1] is None


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_live_grant_path_names_a_client_and_resource_the_instance_has(
    token_service: Any, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """fuzz/live.py: a grant's path goes live with a new client and resource (and, to take
    back, the grant itself), so the instance answers 200/204 instead of 404."""
    admin = await token_service.create_client(scopes=["admin"])
    async with httpx.AsyncClient(base_url=token_service.base_url) as http:
        issued = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "admin"},
            auth=(admin.client_id, admin.client_secret),
        )
        monkeypatch.setenv("FUZZ_SERVICE_URL", token_service.base_url)
        monkeypatch.setenv("FUZZ_ADMIN_TOKEN", issued.json()["access_token"])
        drawn = SimpleNamespace(path_parameters={"client_id": "x", "resource_id": "y", "kind": "?"})
        live._seen.clear()
        path = "/admin/clients/{client_id}/grants/{resource_id}/{kind}"

        live._http.cache_clear()  # the run's one client is for one instance: this test's
        try:
            await asyncio.to_thread(live.make_live, (method, path), "fuzzing", drawn)
        finally:
            live._http().close()
            live._http.cache_clear()

        answer = await http.request(
            method,
            path.format(**drawn.path_parameters),
            json={} if method == "PUT" else None,
            headers={"Authorization": f"Bearer {issued.json()['access_token']}"},
        )
    assert drawn.path_parameters["kind"] == "token"
    assert answer.status_code == (200 if method == "PUT" else 204), answer.text
