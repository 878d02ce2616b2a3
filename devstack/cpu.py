"""CPU time of the stack's components, read from /proc: where a benchmark's cycles went.

A component's time is its process's plus every descendant's (PostgreSQL's
backends, Envoy behind its wrapper). A descendant can also be counted apart
by its command line: PostgreSQL names the database each backend serves in
its process title, so one cluster's CPU can be told apart per service database.

Between two snapshots (`spent`), processes that started meanwhile count in
full, and so do processes that ended: a parent that reaps a child adds the
child's whole CPU time to its own `cutime`/`cstime`, so the parent's growth
there, less what the child had already used at the first snapshot, is what
the child spent in between. That time goes to the parent's component (which
child it was is gone with it): a backend that closes mid-window moves its
last CPU from "postgres:<db>" to "postgres", and totals stay exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# A descendant's command line -> the name of the part it belongs to, or None
# to leave it in its component.
Splitter = Callable[[str], str | None]


@dataclass(frozen=True)
class _Stat:
    parent: int
    started: int  # clock ticks after boot: with the pid, identifies a process (pids are reused)
    own: float  # user + system seconds
    reaped: float  # user + system seconds of its ended, waited-for children


@dataclass(frozen=True)
class Process:
    component: str
    parent: int
    own: float
    reaped: float


Snapshot = Mapping[tuple[int, int], Process]  # (pid, start time) -> its component and CPU so far


def _stats() -> dict[int, _Stat]:
    found: dict[int, _Stat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name (field 2) may hold spaces and parentheses: split after its closing one.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        # fields[0] is stat's field 3 (state): utime, stime, cutime, cstime are 14-17, starttime 22.
        own = (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
        reaped = (int(fields[13]) + int(fields[14])) / _TICKS_PER_SECOND
        found[int(entry.name)] = _Stat(int(fields[1]), int(fields[19]), own, reaped)
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def postgres_database(cmdline: str) -> str | None:
    """The database of a PostgreSQL backend, from its title ("postgres: <user> <database> <host(port)> <state>")."""
    parts = cmdline.split()
    if len(parts) >= 4 and parts[0] == "postgres:" and (parts[3] == "[local]" or parts[3].endswith(")")):
        return parts[2]
    return None


def snapshot(roots: Mapping[str, int], split: Mapping[str, Splitter] | None = None) -> dict[tuple[int, int], Process]:
    """Every process of the named components now (root pid and all descendants).

    With `split`, a descendant of component C for which split[C] returns a name
    N belongs to "C:N" instead of C (and so do its own descendants).
    """
    stats = _stats()
    children = _children(stats)
    found: dict[tuple[int, int], Process] = {}
    for name, root in roots.items():
        for pid, process in _tree(stats, children, name, root, (split or {}).get(name)):
            found[(pid, stats[pid].started)] = process
    return found


def _children(stats: Mapping[int, _Stat]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.parent, []).append(pid)
    return children


def _tree(
    stats: Mapping[int, _Stat], children: Mapping[int, list[int]], name: str, root: int, splitter: Splitter | None
) -> Iterator[tuple[int, Process]]:
    pending = [(root, name)] if root in stats else []
    while pending:
        pid, owner = pending.pop()
        if splitter is not None and pid != root and owner == name:
            part = splitter(_cmdline(pid))
            if part is not None:
                owner = f"{name}:{part}"
        stat = stats[pid]
        yield pid, Process(owner, stat.parent, stat.own, stat.reaped)
        pending.extend((child, owner) for child in children.get(pid, ()))


def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each component used between two snapshots (see the module docstring)."""
    totals: dict[str, float] = {}
    for key, now in after.items():
        then = before.get(key)
        used = now.own + now.reaped - ((then.own + then.reaped) if then else 0.0)
        totals[now.component] = totals.get(now.component, 0.0) + used
    live = {pid: process for (pid, _), process in after.items()}
    for key, then in before.items():
        parent = live.get(then.parent)
        if key not in after and parent is not None:
            # Reaped by a parent still in the tree: its time before the first snapshot is in the parent's growth.
            totals[parent.component] = totals.get(parent.component, 0.0) - then.own - then.reaped
    return totals


def component_cpu_seconds(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named component (its root pid, all descendants, their reaped children)."""
    stats = _stats()
    children = _children(stats)
    return {
        name: sum(process.own + process.reaped for _, process in _tree(stats, children, name, root, None))
        for name, root in roots.items()
    }


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat), for everything that runs."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_SECOND
