"""The light library reaches into the server through one entry, `tokenrota_server.testing`."""

from __future__ import annotations

import ast
from pathlib import Path

import tokenrota
import tokenrota_server

LIBRARY = Path(tokenrota.__file__).parent
SERVER = Path(tokenrota_server.__file__).parent


def server_imports(root: Path) -> set[tuple[str, str]]:
    """(file, server module) for every import of `tokenrota_server` below `root`, lazy or not."""
    found = set()
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [_imported_module(node.module, alias.name) for alias in node.names]
            else:
                continue
            found |= {
                (path.name, module)
                for module in modules
                if module.partition(".")[0] == "tokenrota_server"
            }
    return found


def _imported_module(package: str, name: str) -> str:
    """The module `from package import name` reaches: `package.name` when that is a module."""
    if package.partition(".")[0] != "tokenrota_server":
        return package
    candidate = SERVER.joinpath(*package.split(".")[1:], name)
    is_module = candidate.with_suffix(".py").is_file() or candidate.is_dir()
    return f"{package}.{name}" if is_module else package


def test_the_library_imports_one_server_module() -> None:
    """Only `tokenrota.testing` imports the server, and only its entry for the fixtures."""
    assert server_imports(LIBRARY) == {("testing.py", "tokenrota_server.testing")}
