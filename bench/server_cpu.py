"""The CPU time a process has used, from /proc (Linux): user + system, all its threads.

Over a round of requests, divided by their number, it is the server's cost per request: the
number a shared, noisy machine disturbs least (a wait for the CPU is not CPU time).
"""

from __future__ import annotations

import os

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` in seconds; `OSError` if it is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from 1: fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
