"""/metrics, the JSON log lines and X-Request-ID, observed on real requests."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from tokenrota_server import telemetry
from tokenrota_server.db.pool import create_pool
from tokenrota_server.http import metrics
from tokenrota_server.outcomes import Grant, LoginOutcome, RefreshOutcome
from tokenrota_server.telemetry import JsonFormatter, RequestContext

from tests.support import PASSWORD, CreateClient, FakeClock, Register, RegisterAndLogin, Serve


def sample(name: str, **labels: str) -> float:
    """The current value of one metric sample (0 when it was never counted)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deltas:
    """Metric samples read before and after the act, to compare increments."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._samples = samples
        self._before = [sample(name, **labels) for name, labels in samples]

    def now(self) -> list[float]:
        return [
            sample(name, **labels) - before
            for (name, labels), before in zip(self._samples, self._before, strict=True)
        ]


async def test_metrics_are_served_in_the_prometheus_text_format(
    client: httpx.AsyncClient,
) -> None:
    """Every metric family is listed, with the content type Prometheus expects."""
    await client.get("/healthz")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    for family in (
        "token_service_http_requests_total",
        "token_service_http_request_duration_seconds_bucket",
        'token_service_logins_total{outcome="throttled"}',
        'token_service_refreshes_total{outcome="reuse_detected"}',
        'token_service_tokens_issued_total{grant="client_credentials"}',
        "token_service_db_pool_connections",
        "token_service_db_pool_idle_connections",
        "token_service_db_pool_waiting_acquirers",
    ):
        assert f"\n{family}" in response.text
    assert 'route="/healthz"' in response.text


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    """Counted under the route template; an unmatched path never becomes a label."""
    deltas = Deltas(
        (
            "token_service_http_requests_total",
            {"method": "GET", "route": "/profile", "status": "401"},
        ),
        (
            "token_service_http_request_duration_seconds_count",
            {"method": "GET", "route": "/profile"},
        ),
        (
            "token_service_http_requests_total",
            {"method": "GET", "route": "<unmatched>", "status": "404"},
        ),
    )

    await client.get("/profile")
    await client.get("/profile")
    await client.get("/no-such-path/eyJhbGciOiJIUzI1NiJ9")
    exposed = (await client.get("/metrics")).text

    assert deltas.now() == [2, 2, 1]
    assert "no-such-path" not in exposed


async def test_login_outcomes_and_tokens_issued(
    client: httpx.AsyncClient, register: Register
) -> None:
    """A good login, a wrong password and a malformed body are three different outcomes."""
    user = await register(client)
    deltas = Deltas(
        ("token_service_logins_total", {"outcome": "success"}),
        ("token_service_logins_total", {"outcome": "failure"}),
        ("token_service_logins_total", {"outcome": "rejected"}),
        ("token_service_tokens_issued_total", {"grant": "login"}),
    )

    await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    await client.post("/login", json={"email": user["email"], "password": "wrong password"})
    await client.post("/login", content=b"{", headers={"content-type": "application/json"})

    assert deltas.now() == [1, 1, 1, 1]


async def test_refresh_outcomes(
    client: httpx.AsyncClient, clock: FakeClock, register_and_login: RegisterAndLogin
) -> None:
    """Rotated, grace, reuse detected and invalid are each counted once."""
    _, pair = await register_and_login(client)
    outcomes = ("rotated", "grace", "reuse_detected", "invalid")
    deltas = Deltas(
        *[("token_service_refreshes_total", {"outcome": outcome}) for outcome in outcomes],
        ("token_service_tokens_issued_total", {"grant": "refresh_token"}),
    )

    first = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    grace = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    clock.advance(60)
    reuse = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    invalid = await client.post("/refresh", json={"refresh_token": "not-a-token"})

    assert [first.status_code, grace.status_code, reuse.status_code, invalid.status_code] == [
        200,
        200,
        403,
        403,
    ]
    assert deltas.now() == [1, 1, 1, 1, 2]


async def test_a_refresh_grant_at_oauth_token_counts_as_a_refresh(
    client: httpx.AsyncClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """Counted from what the refresh use case recorded, as at /refresh; a refusal is invalid."""
    _, pair = await register_and_login(client)
    deltas = Deltas(
        ("token_service_refreshes_total", {"outcome": "rotated"}),
        ("token_service_refreshes_total", {"outcome": "invalid"}),
        ("token_service_tokens_issued_total", {"grant": "refresh_token"}),
        ("token_service_tokens_issued_total", {"grant": "client_credentials"}),
    )

    rotated = await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    )
    missing = await client.post("/oauth/token", data={"grant_type": "refresh_token"})

    assert [rotated.status_code, missing.status_code] == [200, 400]
    assert deltas.now() == [1, 1, 1, 0]


async def test_pool_gauges_count_connections_and_waiting_acquirers(database_url: str) -> None:
    """With the only connection lent out, a second acquirer is counted as waiting."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire():
            waiter = asyncio.ensure_future(pool.acquire())
            await asyncio.sleep(0.05)
            metrics.observe_pool(pool)
            busy = [
                sample(f"token_service_db_pool_{name}")
                for name in ("connections", "idle_connections", "waiting_acquirers")
            ]
        await pool.release(await waiter)
        metrics.observe_pool(pool)
        calm = sample("token_service_db_pool_waiting_acquirers")
    finally:
        await pool.close()

    assert busy == [1, 0, 1]
    assert calm == 0


async def test_request_id_is_generated_and_echoed(client: httpx.AsyncClient) -> None:
    """Without one, each response carries a fresh id."""
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-123.abc_DEF:9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("two words", False),
        ('{"level": "error"}', False),
        ("", False),
    ],
)
async def test_a_callers_request_id_is_kept_only_if_short_and_plain(
    client: httpx.AsyncClient, sent: str, kept: bool
) -> None:
    """A safe id is echoed as sent; anything else is replaced by a generated one."""
    response = await client.get("/healthz", headers={"X-Request-ID": sent})

    echoed = response.headers["x-request-id"]
    assert (echoed == sent) is kept
    assert response.headers.get_list("x-request-id") == [echoed]


def rendered(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records]


async def test_one_json_access_line_per_request_with_the_user(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    register_and_login: RegisterAndLogin,
) -> None:
    """The access line names request id, method, route, status, duration and the user."""
    user, pair = await register_and_login(client)
    caplog.set_level(logging.INFO, logger="tokenrota")

    response = await client.get(
        "/profile",
        headers={"Authorization": f"Bearer {pair['access_token']}", "X-Request-ID": "trace-1"},
    )

    lines = [line for line in rendered(caplog) if line["logger"] == "tokenrota.access"]
    assert response.status_code == 200
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "trace-1"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/profile", 200)
    assert line["user_id"] == user["id"]
    assert isinstance(line["duration_ms"], float)
    assert line["time"].endswith("+00:00")


async def test_security_events_are_json_lines_with_ids_and_no_secrets(
    client: httpx.AsyncClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    register_and_login: RegisterAndLogin,
) -> None:
    """Failed login and reuse detection are logged with ids; no token or password anywhere."""
    caplog.set_level(logging.INFO, logger="tokenrota")
    user, pair = await register_and_login(client)
    await client.post("/login", json={"email": user["email"], "password": "wrong password!"})
    await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    clock.advance(60)
    await client.post(
        "/refresh",
        json={"refresh_token": pair["refresh_token"]},
        headers={"X-Request-ID": "replay-1", "Authorization": f"Bearer {pair['access_token']}"},
    )

    lines = rendered(caplog)
    text = "\n".join(json.dumps(line) for line in lines)
    security = [line for line in lines if line["logger"] == "tokenrota.security"]
    failed = next(line for line in security if line["message"] == "login failed")
    reuse = next(line for line in security if "reuse" in line["message"])
    refresh_lines = [line for line in lines if line.get("request_id") == "replay-1"]
    assert failed["user_id"] == user["id"]
    assert failed["outcome"] == "failure"
    assert reuse["user_id"] == user["id"]
    assert reuse["outcome"] == "reuse_detected"
    assert reuse["session_id"]
    assert reuse["request_id"] == "replay-1"
    assert {line["logger"] for line in refresh_lines} == {"tokenrota.security", "tokenrota.access"}
    for secret in (PASSWORD, "wrong password!", pair["access_token"], pair["refresh_token"]):
        assert secret not in text
    assert "Bearer" not in text
    assert "access_token_secret" not in text


def test_only_listed_fields_reach_the_log() -> None:
    """An extra that is not in the list (a token handed over by mistake) is not rendered."""
    record = logging.LogRecord("tokenrota", logging.INFO, __file__, 1, "hello", None, None)
    record.user_id = "u-1"
    record.refresh_token = "eyJ.secret.token"
    record.password = "hunter2hunter2"

    line = json.loads(JsonFormatter().format(record))

    assert line["user_id"] == "u-1"
    assert "refresh_token" not in line
    assert "hunter2" not in json.dumps(line)


@pytest.mark.parametrize("grant", list(Grant))
def test_tokens_issued_are_counted_by_the_grant_the_use_case_recorded(grant: Grant) -> None:
    """The grant comes from the use case, not the route; a refused answer counts none."""
    deltas = Deltas(("token_service_tokens_issued_total", {"grant": grant}))

    metrics.record_request("POST", "/oauth/token", 200, 0.01, RequestContext("r-1", issued=grant))
    metrics.record_request("POST", "/oauth/token", 400, 0.01, RequestContext("r-2", issued=grant))

    assert deltas.now() == [1]


def test_an_answer_of_5xx_counts_no_outcome() -> None:
    """Whatever the use case recorded, a request that failed on our side is not an outcome."""
    context = RequestContext(
        "r-3", login=LoginOutcome.SUCCESS, refresh=RefreshOutcome.ROTATED, issued=Grant.LOGIN
    )
    deltas = Deltas(
        ("token_service_logins_total", {"outcome": "success"}),
        ("token_service_refreshes_total", {"outcome": "rotated"}),
        ("token_service_tokens_issued_total", {"grant": "login"}),
    )

    metrics.record_request("POST", "/login", 503, 0.01, context)

    assert deltas.now() == [0, 0, 0]


def test_the_first_identity_named_in_a_request_is_kept() -> None:
    """A later event naming another session (one the caller revokes) does not replace it."""
    context = RequestContext("r-2")
    token = telemetry.enter(context)
    try:
        telemetry.annotate(user_id="u-1", session_id="caller")
        telemetry.annotate(session_id="revoked-one")
        telemetry.record(refresh=RefreshOutcome.INVALID)
        telemetry.record(refresh=RefreshOutcome.GRACE)
    finally:
        telemetry.leave(token)

    assert (context.user_id, context.session_id) == ("u-1", "caller")
    assert context.refresh is RefreshOutcome.GRACE


async def test_client_credentials_are_counted_and_logged_with_the_client(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    create_client: CreateClient,
) -> None:
    """A client_credentials grant counts under its grant, and its access line names the client."""
    client_id, secret = await create_client(db, settings)
    caplog.set_level(logging.INFO, logger="tokenrota")
    deltas = Deltas(("token_service_tokens_issued_total", {"grant": "client_credentials"}))

    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )

    access = [line for line in rendered(caplog) if line["logger"] == "tokenrota.access"]
    assert response.status_code == 200
    assert deltas.now() == [1]
    assert access[-1]["client_id"] == client_id
    assert secret not in json.dumps(access)


async def test_behind_a_trusted_proxy_the_access_line_names_the_real_client(
    make_settings: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture, serve: Serve
) -> None:
    """With TRUSTED_PROXIES, client_ip is the forwarded address, as the throttle sees it."""
    settings = make_settings(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    caplog.set_level(logging.INFO, logger="tokenrota.access")
    async with serve(settings, clock) as client:
        await client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})

    (line,) = [line for line in rendered(caplog) if line["logger"] == "tokenrota.access"]
    assert line["client_ip"] == "203.0.113.9"


def test_an_access_line_written_directly_is_the_line_logging_would_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the JSON handler the only destination, the line skips logging: the same JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(telemetry, "_json_handler", handler)
    monkeypatch.setattr(root, "handlers", [handler])
    level = root.level
    root.setLevel(logging.INFO)
    access = logging.getLogger("tokenrota.access")
    fields: dict[str, object] = {
        "request_id": "trace-9",
        "method": "GET",
        "route": "/profile",
        "status": 200,
        "duration_ms": 1.25,
        "client_ip": "127.0.0.1",
        "user_id": "u-1",
        "client_id": None,
        "session_id": "s-1",
        "access_token": "eyJ.not.logged",
    }
    token = telemetry.enter(RequestContext("trace-9"))
    try:
        telemetry.log_info(access, "request", fields)
        record = access.makeRecord(access.name, logging.INFO, __file__, 1, "request", (), None)
        record.__dict__.update(fields)
        through_logging = json.loads(JsonFormatter().format(record))
    finally:
        telemetry.leave(token)
        root.setLevel(level)

    assert stream.getvalue().count("\n") == 1
    direct = json.loads(stream.getvalue())
    assert direct.pop("time")[:19] == through_logging.pop("time")[:19]
    assert direct == through_logging
    assert list(direct) == list(through_logging)
    assert direct["status"] == 200
    assert direct["logger"] == "tokenrota.access"
    assert "access_token" not in direct


def test_an_access_line_reaches_any_other_handler_through_logging(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A second destination (here the test's capture) gets a real record, with its extras."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    monkeypatch.setattr(telemetry, "_json_handler", handler)
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.INFO, logger="tokenrota.access")
    try:
        telemetry.log_info(logging.getLogger("tokenrota.access"), "request", {"status": 201})
    finally:
        logging.getLogger().removeHandler(handler)

    (record,) = [r for r in caplog.records if r.name == "tokenrota.access"]
    assert record.status == 201
    assert json.loads(stream.getvalue())["status"] == 201
