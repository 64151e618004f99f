"""The CPU time a process has used, from /proc (Linux): user + system, all its threads.

Over a round of requests, divided by their number, it is the server's cost per request: the
number a shared, noisy machine disturbs least (a wait for the CPU is not CPU time).
"""

from __future__ import annotations

import os
import resource

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` in seconds; `OSError` if it is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from 1: fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of process `pid` and of all its descendants alive now (a supervisor and
    its workers, a postmaster and its backends); a process that ends meanwhile is left out."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            pending.extend(_children(current))
        except OSError:
            continue  # gone between the listing and the reading
    return total


def _children(pid: int) -> list[int]:
    # /proc/PID/task/TID/children lists each thread's children (Linux 3.5+).
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found.extend(int(child) for child in children.read().split())
    return found


def parent_of(pid: int) -> int:
    """The parent process id of `pid` (its `PPid`)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def command_name(pid: int) -> str:
    """The command name of `pid` (`postgres`, `wrk` ...); `OSError` if it is gone."""
    with open(f"/proc/{pid}/comm") as command:
        return command.read().strip()


def reaped_children_cpu_seconds() -> float:
    """utime + stime of this process's children that have ended and been waited for (a `wrk`
    run, once it has exited): the difference over a run is that run's CPU."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
