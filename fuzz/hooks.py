"""Schemathesis hooks: generators for the formats /openapi.json names but cannot spell, and
the secrets no schema can (a live token, the current password, a DPoP proof signed for the
request, and the live bodies of fuzz/live.py), mixed into generated bodies and headers.

Each cursor is opaque base64url over a small grammar (docs/admin.md, docs/revocation.md). Random
strings almost never decode to that grammar, and so never reach the checks behind it; these
draw cursors of the grammar with any values in it (times of any offset, integers of any size),
and also plain text.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from tokenrota.dpop import ProofKey
from tokenrota_server.db.pagination import encode_cursor
from tokenrota_server.revocations import Cursor

from fuzz.live import make_live

# The listings' queries as `admin` tags them: without the `email` or `user_id` filter.
USERS_QUERY = "users:"
AUDIT_QUERY = "audit:"
CLIENTS_QUERY = "clients"


def _base64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# The boundaries a fuzzer tries first: each integer width's ends, and the ends of time.
_edge_integers = st.sampled_from(
    [
        sign * 2**bits + step
        for bits in (31, 32, 53, 63, 64)
        for sign in (1, -1)
        for step in (-1, 0, 1)
    ]
)
_integers = _edge_integers | st.integers()
_offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
_times = st.one_of(
    st.datetimes(timezones=_offsets),
    st.builds(
        lambda end, offset: end.replace(tzinfo=offset),
        st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)]),  # noqa: DTZ001
        _offsets,
    ),
).map(lambda at: at.isoformat())
_json_values = st.recursive(
    st.none() | st.booleans() | _integers | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)

schemathesis.openapi.format(
    "users-cursor",
    st.one_of(
        st.builds(lambda at, user: encode_cursor(USERS_QUERY, [at, str(user)]), _times, st.uuids()),
        st.lists(_json_values, max_size=3).map(lambda key: encode_cursor(USERS_QUERY, key)),
        st.text(max_size=64),
    ),
)
schemathesis.openapi.format(
    "audit-cursor",
    st.one_of(
        _integers.map(lambda row_id: encode_cursor(AUDIT_QUERY, [row_id])),
        st.lists(_json_values, max_size=2).map(lambda key: encode_cursor(AUDIT_QUERY, key)),
        st.text(max_size=64),
    ),
)
schemathesis.openapi.format(
    "clients-cursor",
    st.one_of(
        st.builds(lambda at, name: encode_cursor(CLIENTS_QUERY, [at, name]), _times, st.text()),
        st.lists(_json_values, max_size=3).map(lambda key: encode_cursor(CLIENTS_QUERY, key)),
        st.text(max_size=64),
    ),
)
schemathesis.openapi.format(
    "feed-cursor",
    st.one_of(
        _integers.map(lambda row_id: Cursor(abs(row_id)).encode()),
        st.from_regex(r"\Av1\.[0-9]{1,19}\Z").map(_base64url),
        st.text(max_size=64),
    ),
)

# Body fields only a secret fills, by operation: the variables `python -m fuzz` sets, each a
# space-separated list (a token is spent once; the current password, once changed, is stale).
SECRET_FIELDS = {
    ("POST", "/password"): ("current_password", "FUZZ_USER_PASSWORD"),
    ("POST", "/password/reset"): ("token", "FUZZ_RESET_TOKENS"),
    ("POST", "/email/verify"): ("token", "FUZZ_VERIFICATION_TOKENS"),
}


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: object) -> st.SearchStrategy[object]:
    """Half the bodies of these operations carry a live secret; once spent or changed, they
    are refused like the rest."""
    operation = context.operation
    secret = SECRET_FIELDS.get((operation.method.upper(), operation.path)) if operation else None
    if secret is None or not isinstance(body, dict) or not os.environ.get(secret[1]):
        return st.just(body)
    field, variable = secret
    live = st.sampled_from(os.environ[variable].split()).map(lambda value: {**body, field: value})
    return st.one_of(st.just(body), live)


# The operations whose DPoP header binds or proves a key. A generated header only has the shape
# of a proof (a compact JWS), which the service refuses with 400 invalid_dpop_proof: each
# positive case that sends one sends instead a real proof, by a key of this run, for this
# method and the instance's URL, signed now. Negative cases keep what they drew.
DPOP_OPERATIONS = frozenset(
    {
        ("POST", "/login"),
        ("POST", "/refresh"),
        ("POST", "/oauth/token"),
        ("POST", "/login/mfa"),
        ("POST", "/passkeys/login"),
    }
)
DPOP_KEY = ProofKey()


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, **kwargs: Any) -> None:
    """Positive cases: a real DPoP proof for a drawn one, and every other one of the
    operations `fuzz.live` knows sent with live values (a success to answer, not only
    refusals)."""
    operation = (case.method.upper(), case.operation.path)
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return
    headers = case.headers or {}
    sent = next((name for name in headers if name.lower() == "dpop"), None)
    if operation in DPOP_OPERATIONS and sent is not None:
        base_url = os.environ["FUZZ_BASE_URL"].rstrip("/")
        headers[sent] = DPOP_KEY.proof(
            case.method.upper(), base_url + case.operation.path, now=datetime.now(UTC)
        )
    make_live(operation, str(meta.phase.name), case)
