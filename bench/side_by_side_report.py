"""The side-by-side run's report: medians over rounds, their spread, ratios taken within a round.

A ratio is computed in each round (ours over the prototype's, measured seconds apart) before
its median is taken: a round that the machine slowed for both sides still gives a fair ratio.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

# One measurement (p50, p99, cpu, rate, requests ...) of one server in one round.
Sample = dict[str, float]
# Every round's sample, by what was measured ("refresh ours", "wrk prototype" ...).
Results = dict[str, list[Sample]]

RAW_CLIENT = "raw keep-alive HTTP/1.1 client (bench/raw_http.py)"


def spread(values: list[float], digits: int = 2) -> str:
    """The median of `values` and their lowest-highest range."""
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{middle:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


@dataclass(frozen=True)
class Table:
    """The results, read by column (one value per round) and as round-by-round ratios."""

    results: Results

    def column(self, key: str, name: str) -> list[float]:
        """`name` (p50, rate ...) of `key`'s sample in each round."""
        return [sample[name] for sample in self.results[key]]

    def ratios(self, ours: str, theirs: str, name: str) -> list[float]:
        """`ours`'s `name` over `theirs`'s, round by round."""
        pairs = zip(self.column(ours, name), self.column(theirs, name), strict=True)
        return [a / b for a, b in pairs]

    def one_at_a_time(self, prefix: str, client: str) -> None:
        """The one-at-a-time lines of the keys starting with `prefix`, timed with `client`."""
        print(f"  one request at a time, {client}, ms:      ours                 prototype")
        has_cpu = "cpu" in self.results[f"{prefix}refresh ours"][0]
        fields = ("p50", "p99", "cpu") if has_cpu else ("p50", "p99")
        for route in ("refresh", "profile"):
            for name in fields:
                ours = self.column(f"{prefix}{route} ours", name)
                theirs = self.column(f"{prefix}{route} prototype", name)
                digits = 3 if name == "cpu" else 2
                label = "CPU/request" if name == "cpu" else name
                print(
                    f"    {route:<8} {label:<12} {spread(ours, digits):>24}"
                    f"  {spread(theirs, digits):>24}"
                )
        for route in ("refresh", "profile"):
            us, them = f"{prefix}{route} ours", f"{prefix}{route} prototype"
            speed = spread(self.ratios(them, us, "p50"))  # the rate is 1/p50
            line = f"    {route}: ours at {speed}x the prototype's rate (1/p50)"
            line += f", p99 at {spread(self.ratios(us, them, 'p99'))}x"
            if has_cpu:
                line += f", CPU/request at {spread(self.ratios(us, them, 'cpu'))}x"
            print(line)

    def throughput(self, prefix: str, names: tuple[str, ...]) -> None:
        """The wrk lines of `prefix` + each of `names`, and ours over the prototype's."""
        for name in names:
            key = f"{prefix} {name}"
            rate, p50, p99 = (self.column(key, field) for field in ("rate", "p50", "p99"))
            line = f"    {name:<10} {spread(rate, 0):>20} requests/s"
            line += f"  p50 {spread(p50)} ms  p99 {spread(p99)} ms"
            if "cpu" in self.results[key][0]:
                line += f"  CPU {spread(self.column(key, 'cpu'), 3)} ms/request"
            print(line)
            others = [
                f"{who} {spread(self.column(key, f'{who} cpu'), 3)}"
                for who in ("postgres", "wrk")
                if f"{who} cpu" in self.results[key][0]
            ]
            if others:
                print(f"               CPU ms/request of {', of '.join(others)}")
        ours, theirs = f"{prefix} ours", f"{prefix} prototype"
        print(f"    ours / prototype, requests/s:  {spread(self.ratios(ours, theirs, 'rate'))}x")
        print(f"    ours / prototype, p99:         {spread(self.ratios(ours, theirs, 'p99'))}x")
        print(f"    ours / prototype, CPU/request: {spread(self.ratios(ours, theirs, 'cpu'))}x")
        if "postgres cpu" in self.results[ours][0]:
            # When the cores are what runs out, the rates go as the inverse of these.
            whole = [
                machine_cpu(us) / machine_cpu(them)
                for us, them in zip(self.results[ours], self.results[theirs], strict=True)
            ]
            print(f"    ours / prototype, server + Postgres + wrk CPU/request: {spread(whole)}x")


def machine_cpu(sample: Sample) -> float:
    """The CPU per request (ms) of the server, Postgres and wrk together."""
    return sample["cpu"] + sample["postgres cpu"] + sample["wrk cpu"]


def two_worker_ceiling(sample: Sample, cores: int | None = None) -> float:
    """The highest rate two workers could reach over one, given one worker's run's CPU per
    request of the worker (w), Postgres (p) and wrk (k), all on `cores` cores.

    One worker runs on one core at most: rate <= 1/w, and all three share the cores: rate <=
    cores/(w + p + k). Two workers: <= 2/w and the same shared bound. On 2 cores with p + k
    below w, the ratio is 2w / (w + p + k): 1.5x needs p + k <= w/3.
    """
    cores = cores or os.cpu_count() or 1
    worker, shared = sample["cpu"], machine_cpu(sample)
    one = min(1 / worker, cores / shared)
    two = min(2 / worker, cores / shared)
    return two / one


def report(results: Results, rounds: int, seconds: int, network_delay_ms: float) -> None:
    """Print what `results` measured over `rounds` rounds of `seconds`-long wrk runs."""
    table = Table(results)
    print(f"side by side with the bare prototype, {rounds} interleaved rounds:")
    print("  median (lowest-highest) of the rounds' values; ratios are taken within each round")
    table.one_at_a_time("", RAW_CLIENT)
    if "httpx refresh ours" in results:
        table.one_at_a_time("httpx ", "httpx client, for comparison (its own cost included)")
    if "net refresh ours" in results:
        print(
            f"  POST /refresh one at a time ({RAW_CLIENT}), Postgres behind bench/latency_proxy"
            f" adding {network_delay_ms} ms each way: a network, NOT this machine's loopback, ms:"
        )
        for name in ("p50", "p99"):
            ours = table.column("net refresh ours", name)
            theirs = table.column("net refresh prototype", name)
            print(f"    {name}  ours {spread(ours)}  prototype {spread(theirs)}")
        speed = table.ratios("net refresh prototype", "net refresh ours", "p50")
        print(f"    ours at {spread(speed)}x the prototype's rate (1/p50)")
    print(f"  GET /profile with wrk, 32 connections, {seconds} s per round:")
    table.throughput("wrk", ("ours", "prototype", "ours x2"))
    workers = spread(table.ratios("wrk ours x2", "wrk ours", "rate"))
    print(f"    --workers 2 / one worker, requests/s: {workers}x")
    if "postgres cpu" in results["wrk ours"][0]:
        ceilings = [two_worker_ceiling(sample) for sample in results["wrk ours"]]
        print(
            f"    the most --workers 2 could give over one worker on {os.cpu_count()} cores,"
            f" from one worker's CPU per request and that of Postgres and wrk: {spread(ceilings)}x"
        )
    print(
        f"  POST /refresh with wrk, 32 connections, one refresh chain each, {seconds} s per round:"
    )
    table.throughput("wrk refresh", ("ours", "prototype"))
    rate, p99, cpu = (table.column("introspect", name) for name in ("rate", "p99", "cpu"))
    print(
        "  POST /oauth/introspect, one worker (one core), wrk 32 connections: "
        f"{spread(rate, 0)} requests/s, p99 {spread(p99)} ms, CPU {spread(cpu, 3)} ms/request"
    )
