"""CPU time of the stack's components, read from /proc: where a benchmark's cycles went.

A component's time is its process's plus every descendant's (PostgreSQL's
backends, Envoy behind its wrapper); processes that ended within the window
are not counted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user + system clock ticks) of every process now."""
    found: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name (field 2) may hold spaces and parentheses: split after its closing one.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        found[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return found


def component_cpu_seconds(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named component (its root pid and all descendants)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[str, float] = {}
    for name, root in roots.items():
        ticks, pending = 0, [root]
        while pending:
            pid = pending.pop()
            ticks += processes.get(pid, (0, 0))[1]
            pending.extend(children.get(pid, ()))
        totals[name] = ticks / _TICKS_PER_SECOND
    return totals
