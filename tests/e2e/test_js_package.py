"""clients/js as an npm package (tokenrota-client): what `npm pack` ships, what the module
exports, and that the service serves the very same file at /auth-client.js.

npm and node run offline here: the package has no dependencies and no scripts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "js"
SHIPPED = {"package.json", "README.md", "auth-client.js", "auth-client.d.ts", "LICENSE"}
LICENSE = Path(__file__).resolve().parents[2] / "LICENSE"


def tool(name: str) -> str:
    """The path of node or npm; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install -y npm (.ci/run should do this)")
    return path


def run(command: list[str], cwd: Path, home: Path) -> str:
    """Run `command` offline, with npm's cache and logs under `home`; its stdout."""
    env = {
        **os.environ,
        "HOME": str(home),
        "npm_config_cache": str(home / "npm-cache"),
        "npm_config_offline": "true",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_manifest_is_an_offline_es_module_package() -> None:
    """ES module with an exports map and types, the Python package's version, a files
    whitelist, and nothing that would fetch or run at install time."""
    manifest = json.loads((PACKAGE / "package.json").read_text())

    assert manifest["name"] == "tokenrota-client"
    # One release number for both halves: the npm client and the wheel ship together.
    assert manifest["version"] == metadata.version("tokenrota")
    assert manifest["type"] == "module"
    assert manifest["license"] == "Apache-2.0"
    # npm ships only the package folder: its LICENSE is a copy of the repository's.
    assert (PACKAGE / "LICENSE").read_bytes() == LICENSE.read_bytes()
    assert manifest["exports"]["."] == {
        "types": "./auth-client.d.ts",
        "default": "./auth-client.js",
    }
    assert set(manifest["files"]) == SHIPPED - {"package.json"}
    assert not {"dependencies", "scripts", "peerDependencies", "optionalDependencies"} & set(
        manifest
    )


def test_npm_pack_ships_the_module_its_types_and_readme(tmp_path: Path) -> None:
    """`npm pack` works offline and the tarball holds exactly the shipped files (the licence
    among them), the module byte for byte."""
    npm = tool("npm")

    listing = json.loads(run([npm, "pack", "--dry-run", "--json"], PACKAGE, tmp_path))
    run([npm, "pack", "--pack-destination", str(tmp_path)], PACKAGE, tmp_path)

    assert {entry["path"] for entry in listing[0]["files"]} == SHIPPED
    with tarfile.open(tmp_path / "tokenrota-client-0.2.0.tgz") as tarball:
        assert set(tarball.getnames()) == {f"package/{name}" for name in SHIPPED}
        module = tarball.extractfile("package/auth-client.js")
        assert module is not None
        assert module.read() == (PACKAGE / "auth-client.js").read_bytes()


def test_the_module_exports_what_its_types_declare(tmp_path: Path) -> None:
    """Imported by its package name (through the exports map), the module's exports are the
    names auth-client.d.ts declares as values."""
    node = tool("node")
    declared = set(
        re.findall(
            r"^export (?:declare )?(?:class|function) (\w+)",
            (PACKAGE / "auth-client.d.ts").read_text(),
            re.MULTILINE,
        )
    )
    script = (
        'const m = await import("tokenrota-client"); console.log(JSON.stringify(Object.keys(m)));'
    )

    exported = json.loads(run([node, "--input-type=module", "-e", script], PACKAGE, tmp_path))

    assert set(exported) == declared == {"AuthError", "createAuthClient"}


async def test_the_service_serves_the_package_file_byte_for_byte(
    client: httpx.AsyncClient,
) -> None:
    """/auth-client.js is clients/js/auth-client.js, as a module script any origin may load."""
    response = await client.get("/auth-client.js")

    assert response.status_code == 200
    assert response.content == (PACKAGE / "auth-client.js").read_bytes()
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"


def test_dpop_must_be_a_boolean_and_needs_webcrypto(tmp_path: Path) -> None:
    """`dpop: "yes"` is a TypeError; so is `dpop: true` where there is no WebCrypto (node with its
    global crypto removed stands for an http page), rather than a silent fall back to bearer."""
    node = tool("node")
    script = """
        const { createAuthClient } = await import("tokenrota-client");
        const outcome = (options) => {
            try {
                createAuthClient({ baseUrl: "https://auth.example", ...options });
                return "created";
            } catch (error) {
                return `${error.name}: ${error.message}`;
            }
        };
        const outcomes = [outcome({ dpop: "yes" }), outcome({ dpop: true })];
        Object.defineProperty(globalThis, "crypto", { value: undefined });
        outcomes.push(outcome({ dpop: true }), outcome({ dpop: false }));
        console.log(JSON.stringify(outcomes));
        process.exit(0); // a created client's BroadcastChannel would keep node running
    """

    outcomes = json.loads(run([node, "--input-type=module", "-e", script], PACKAGE, tmp_path))

    assert outcomes == [
        "TypeError: dpop must be true or false",
        "created",
        "TypeError: dpop needs WebCrypto (https)",
        "created",
    ]
