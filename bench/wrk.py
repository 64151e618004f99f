"""Runs of `wrk` (Debian package `wrk`, C, one process) and what they report.

Every run refuses an answer that is not 2xx: a benchmark of errors would measure the wrong thing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

Sample = dict[str, float]
# One refresh chain per wrk thread: see the script.
CHAIN_SCRIPT = Path(__file__).resolve().parent / "refresh_chain.lua"


def milliseconds(text: str) -> float:
    """wrk's `1.23ms`, `456.00us` or `1.02s`, in milliseconds; `ValueError` on anything else."""
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * scale
    raise ValueError(text)


def parse(output: str, url: str) -> Sample:
    """Requests (count), requests/s, p50 and p99 (ms) from `wrk --latency`'s output;
    `RuntimeError` if it counted a non-2xx answer or printed no rate."""
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk got errors from {url}:\n{output}")
    result: Sample = {}
    for line in output.splitlines():
        fields = line.split()
        if fields[1:3] == ["requests", "in"]:
            result["requests"] = float(fields[0])
        elif line.startswith("Requests/sec:"):
            result["rate"] = float(fields[1])
        elif fields[:1] in (["50%"], ["99%"]):
            result["p" + fields[0].rstrip("%")] = milliseconds(fields[1])
    if "rate" not in result or not result.get("requests"):
        raise RuntimeError(f"wrk printed no rate for {url}:\n{output}")
    return result


async def run(arguments: list[str], url: str, environment: dict[str, str] | None = None) -> Sample:
    process = await asyncio.create_subprocess_exec(
        "wrk", "--latency", *arguments, url, stdout=subprocess.PIPE, env=environment
    )
    output = (await process.communicate())[0].decode()
    return parse(output, url)


async def fixed(
    url: str,
    seconds: int,
    *,
    headers: dict[str, str],
    body: str | None = None,
    connections: int = 32,
) -> Sample:
    """`wrk -t1 -c32` for `seconds` on `url`, every request the same (a POST if `body`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if body is not None:
            script.write(f'wrk.method = "POST"\nwrk.body = "{body}"\n')
        for name, value in headers.items():
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
        script.flush()
        arguments = ["-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name]
        return await run(arguments, url)


async def refresh_chains(url: str, seconds: int, tokens: list[str]) -> Sample:
    """`POST /refresh` for `seconds` on `url`, one connection and one wrk thread per refresh
    chain in `tokens`, each walking its own chain. The chains are spent afterwards: the last
    request of each may have been answered after wrk stopped reading."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as chains:
        chains.write("\n".join(tokens) + "\n")
        chains.flush()
        count = len(tokens)
        # wrk's 2 s timeout would resend a chain's token whose answer was only late: reuse.
        arguments = [f"-t{count}", f"-c{count}", f"-d{seconds}s", "--timeout", "30s"]
        arguments += ["-s", str(CHAIN_SCRIPT)]
        return await run(arguments, url, {**os.environ, "CHAIN_FILE": chains.name})
