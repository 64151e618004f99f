"""fuzz/hooks.py: the fuzzer's positive cases at /login, /refresh and /oauth/token carry a real
DPoP proof for the instance's URL (what no schema can spell), its negative cases what they drew."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from schemathesis.generation import GenerationMode
from tokenrota.dpop import check_proof

from fuzz import hooks

BASE_URL = "http://127.0.0.1:34567"


def case(method: str, path: str, mode: GenerationMode, dpop: str | None) -> Any:
    meta = SimpleNamespace(generation=SimpleNamespace(mode=mode))
    headers = {"DPoP": dpop} if dpop is not None else {}
    return SimpleNamespace(
        method=method, operation=SimpleNamespace(path=path), meta=meta, headers=headers
    )


@pytest.mark.parametrize("path", ["/login", "/refresh", "/oauth/token"])
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
