"""What DPoP costs in the browser: `auth.fetch` with `dpop: true` beside a bearer client, in
headless Chromium. The page's `fetch` is replaced by a stub that answers at once (no network,
no server checks), so what is timed is the client's own work per call: for DPoP a SHA-256 of
the token, a JWT, an ECDSA P-256 signature by WebCrypto, one more header. Also the login, which
for DPoP includes making the key pair and storing it in IndexedDB.

    .venv/bin/python -m bench.browser_dpop [--calls 2000] [--rounds 5]

Per call in microseconds: the median and 90th percentile of the means of batches of 50 calls
(the page's clock ticks in 100 µs), per round; the kinds alternate round by round. Numbers go to
docs/benchmarks.md; nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path
from typing import Any

import uvicorn
from playwright.async_api import async_playwright
from starlette.applications import Starlette
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route

CLIENT = Path(__file__).resolve().parents[1] / "clients" / "js" / "auth-client.js"
CHROMIUM = "/usr/bin/chromium"

MEASURE = """async ([dpop, calls]) => {
    const BATCH = 50;
    const { createAuthClient } = await import("/auth-client.js");
    const token = "x".repeat(600); // about the size of the service's access tokens
    window.fetch = async (input, init) => {
        const request = new Request(input, init);
        if (!request.url.endsWith("/login")) return Response.json({ ok: true });
        const bound = request.headers.has("DPoP");
        const type = bound ? "DPoP" : "Bearer";
        return Response.json({ access_token: token, token_type: type, expires_in: 3600 });
    };
    const started = performance.now();
    const auth = createAuthClient({ dpop });
    await auth.login("bench@example.com", "unused");
    const login = performance.now() - started;
    // The page's clock is coarse (100 µs without cross-origin isolation): time batches.
    const batches = [];
    for (let done = 0; done < calls; done += BATCH) {
        const start = performance.now();
        for (let i = 0; i < BATCH; i += 1) {
            const response = await auth.fetch("/data");
            await response.arrayBuffer();
        }
        batches.push((performance.now() - start) / BATCH);
    }
    batches.sort((a, b) => a - b);
    await auth.logout();
    const at = (share) => 1000 * batches[Math.floor(batches.length * share)];
    return { login: 1000 * login, median: at(0.5), p90: at(0.9) };
}"""


def stub() -> Starlette:
    """The module and a page to load it in: the calls never leave the page."""
    return Starlette(
        routes=[
            Route("/auth-client.js", lambda _: FileResponse(CLIENT, media_type="text/javascript")),
            Route("/app", lambda _: HTMLResponse("<!doctype html><title>bench</title>")),
        ]
    )


async def main(calls: int, rounds: int) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{listener.getsockname()[1]}"
    config = uvicorn.Config(stub(), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
        await asyncio.sleep(0.02)
    results: dict[str, list[dict[str, Any]]] = {"bearer": [], "dpop": []}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = await browser.new_page()
        await page.goto(f"{origin}/app")
        await page.evaluate(MEASURE, [True, 20])  # warm up both paths
        await page.evaluate(MEASURE, [False, 20])
        for _ in range(rounds):
            for kind in ("bearer", "dpop"):
                results[kind].append(await page.evaluate(MEASURE, [kind == "dpop", calls]))
        await browser.close()
    server.should_exit = True
    await serving
    for kind, measured in results.items():
        medians = ", ".join(f"{round_['median']:.0f}" for round_ in measured)
        p90s = ", ".join(f"{round_['p90']:.0f}" for round_ in measured)
        logins = ", ".join(f"{round_['login']:.0f}" for round_ in measured)
        print(f"{kind:6}  median µs [{medians}]  p90 µs [{p90s}]  login µs [{logins}]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.rounds))
