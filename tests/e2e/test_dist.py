"""`make dist`: the wheel, the sdist and the npm tarball, built and checked as a release is.

Run on a copy of the checkout (make dist empties dist/), with this environment's venv: what it
builds is what docs/releasing.md says to upload.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from tests.e2e.test_wheel import INSTALL_TIMEOUT, NOT_SOURCE, PROJECT_ROOT
from tests.processes import clean_environment

# What the sdist holds beyond the packages: the manual, the browser client, the examples.
SDIST_FOLDERS = ("docs/", "clients/js/", "examples/resource_server/")


def test_make_dist_builds_and_checks_the_three_release_files(tmp_path: Path) -> None:
    """dist/ ends with the sdist (docs, clients, examples and the licence in it), the wheel
    and the npm tarball; twine passed both Python files and the installed wheel answered."""
    source = tmp_path / "tokenrota"
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    venv = Path(sys.executable).parent.parent
    version = metadata.version("tokenrota")

    # This venv, never remade from the copy (-o: its install stamp counts as current).
    make = ["make", "dist", f"VENV={venv}", "-o", f"{venv}/.dev-stamp"]
    result = subprocess.run(  # noqa: S603 - make from PATH, as a maintainer runs it
        make,
        cwd=source,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    dist = source / "dist"
    assert sorted(path.name for path in dist.iterdir()) == [
        f"tokenrota-{version}-py3-none-any.whl",
        f"tokenrota-{version}.tar.gz",
        f"tokenrota-client-{version}.tgz",
    ]
    assert result.stdout.count("PASSED") == 2, result.stdout
    with tarfile.open(dist / f"tokenrota-{version}.tar.gz") as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    assert "LICENSE" in names
    for folder in SDIST_FOLDERS:
        assert any(name.startswith(folder) for name in names), f"{folder} is not in the sdist"
    assert not any("__pycache__" in name for name in names)
