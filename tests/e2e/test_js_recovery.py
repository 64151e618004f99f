"""The JS client's password reset (`requestPasswordReset`, `resetPassword`), run by node against
a real service whose messages land in its development mailbox."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tokenrota.testing import TokenService

from tests.e2e.test_js_package import PACKAGE, tool

NEW_PASSWORD = "a brand new passphrase"

SCRIPT = """
import { createAuthClient } from "%(module)s";
const [base, email, fresh] = process.argv.slice(2);
const auth = createAuthClient({ baseUrl: base });
const out = {};
const code = (promise) => promise.then(() => "ok", (e) => `${e.status} ${e.code}`);
out.unknown = await code(auth.requestPasswordReset("nobody-here@example.com"));
out.malformed = await code(auth.requestPasswordReset("not an email"));
out.known = await code(auth.requestPasswordReset(email));
const mail = await (await fetch(`${base}/dev/mailbox/latest?to=${email}&wait=10`)).json();
const token = new URL(mail.link).searchParams.get("token");
out.weak = await code(auth.resetPassword(token, "short"));
out.reset = await code(auth.resetPassword(token, fresh));
out.again = await code(auth.resetPassword(token, fresh));
out.login = await code(auth.login(email, fresh));
console.log(JSON.stringify(out));
process.exit(0); // the client's BroadcastChannel would keep node running
"""


@pytest.fixture
def token_service_settings(tmp_path: Path) -> dict[str, Any]:
    """A development mailbox of this test's own."""
    return {"data_dir": tmp_path / "data"}


async def test_request_and_reset_through_the_js_client(
    token_service: TokenService, tmp_path: Path
) -> None:
    """Unknown and known emails resolve alike; a malformed one is 422; a weak password is 422
    and leaves the link usable; the link works once; the new password logs in."""
    user = await token_service.create_user()
    script = tmp_path / "reset.mjs"
    script.write_text(SCRIPT % {"module": (PACKAGE / "auth-client.js").as_uri()})

    result = await asyncio.to_thread(
        subprocess.run,
        [tool("node"), str(script), token_service.base_url, user.email, NEW_PASSWORD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "unknown": "ok",
        "malformed": "422 invalid_input",
        "known": "ok",
        "weak": "422 weak_password",
        "reset": "ok",
        "again": "400 invalid_token",
        "login": "ok",
    }
