"""What the `token_service` fixture costs a test: its setup and teardown, per test.

Writes a small outside project (N tests, each using `token_service` and registering a user)
under `.data/fixture-cost/`, runs pytest on it in a subprocess with the interpreter given (this
one by default, so another checkout's venv measures that checkout's plugin), and reads pytest's
own setup and teardown durations. The first test also makes the run's template database, a
cost paid once per run: it is reported apart. Numbers go to docs/testing.md and
docs/benchmarks.md; nothing here asserts speed.

    .venv/bin/python -m bench.fixture_cost --tests 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / ".data" / "fixture-cost"

PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""
# pytest's own report of each phase's duration, written where the bench reads it.
CONFTEST = """\
import json
import os


def pytest_runtest_logreport(report):
    if report.when in ("setup", "teardown"):
        with open(os.environ["FIXTURE_COST_OUT"], "a") as out:
            out.write(json.dumps([report.nodeid, report.when, report.duration]) + "\\n")
"""
TEST = """\
import pytest


@pytest.mark.parametrize("n", range({count}))
async def test_uses_the_service(token_service, n):
    user = await token_service.create_user()
    assert user.email
"""


def run(python: str, count: int) -> dict[str, float]:
    """Run `count` tests with `python`'s pytest; the per-test cost's summary, in seconds."""
    PROJECT.mkdir(parents=True, exist_ok=True)
    (PROJECT / "pyproject.toml").write_text(PYPROJECT)
    (PROJECT / "conftest.py").write_text(CONFTEST)
    (PROJECT / "test_cost.py").write_text(TEST.format(count=count))
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        environment = {**os.environ, "FIXTURE_COST_OUT": out.name}
        environment.pop("TEST_DATABASE_URL", None)
        subprocess.run(  # noqa: S603 - an interpreter the operator named
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_cost.py"],
            cwd=PROJECT,
            env=environment,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        phases: dict[str, float] = {}
        order: list[str] = []
        for line in Path(out.name).read_text().splitlines():
            nodeid, _, duration = json.loads(line)
            if nodeid not in phases:
                order.append(nodeid)
            phases[nodeid] = phases.get(nodeid, 0.0) + float(duration)
    first, *rest = (phases[nodeid] for nodeid in order)
    deciles = statistics.quantiles(rest, n=10)
    return {
        "tests": float(len(order)),
        "first": first,
        "median": statistics.median(rest),
        "p90": deciles[8],
        "max": max(rest),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100, help="tests in the run (100)")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter whose plugin is measured"
    )
    arguments = parser.parse_args()
    cost = run(arguments.python, arguments.tests)
    print(
        f"{int(cost['tests'])} tests using token_service, setup + teardown per test: "
        f"median {cost['median'] * 1000:.0f} ms, p90 {cost['p90'] * 1000:.0f} ms, "
        f"max {cost['max'] * 1000:.0f} ms; the first (with the run's template) "
        f"{cost['first'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
