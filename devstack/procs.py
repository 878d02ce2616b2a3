"""Child processes of a local stack: spawn, pid files, stop, one-shot commands.

Every long-running component is started in its own session (so its process
group id equals its pid) and recorded in a pid file together with its start
time, so a recycled pid is never mistaken for ours. Stopping signals the
leader first and falls back to SIGKILL on its whole tree (process group and
descendants), so children (postgres backends, JVM helpers) never outlive
``down``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A component could not be started, checked or stopped."""


@dataclass(frozen=True)
class RunAs:
    """The OS user a child process runs as (only used when we are root)."""

    user: str
    uid: int
    gid: int

    @classmethod
    def named(cls, user: str) -> RunAs:
        entry = pwd.getpwnam(user)
        return cls(user=user, uid=entry.pw_uid, gid=entry.pw_gid)

    def popen_kwargs(self) -> dict[str, object]:
        # Popen drops privileges in the child itself (no runuser wrapper left
        # in the process tree); extra_groups=[] clears root's groups.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def tail(path: Path, lines: int = 30, end: int | None = None) -> str:
    """The last `lines` lines of a log file ('' if it does not exist), up to byte `end` if given."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END) if end is None else end
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read(size - handle.tell()).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class _ProcInfo:
    state: str
    ppid: int
    pgid: int
    start_time: int  # clock ticks since boot: tells a recycled pid apart


def _proc_stat(pid: int) -> _ProcInfo | None:
    """What /proc/<pid>/stat says about a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces.
    fields = raw[raw.rindex(")") + 2 :].split()
    return _ProcInfo(fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def _has_live_thread(pid: int) -> bool:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    for task in tasks:
        try:
            state = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


def _running(pid: int, info: _ProcInfo) -> bool:
    """Not dead. A zombie is dead, only unreaped; but a zombie thread-group
    leader whose other threads are still exiting keeps its files (and its
    listening sockets) open, so it still counts as running."""
    return info.state != "Z" or _has_live_thread(pid)


def is_running(pid: int) -> bool:
    """True if `pid` exists and is not a (fully exited) zombie."""
    info = _proc_stat(pid)
    return info is not None and _running(pid, info)


def _live_processes() -> dict[int, _ProcInfo]:
    found: dict[int, _ProcInfo] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and _running(int(entry.name), info):
                found[int(entry.name)] = info
    return found


def process_tree(pid: int) -> dict[int, int]:
    """pid -> start time of a leader, its process group and all its descendants.

    The group alone is not enough: postgres backends call setsid() and leave
    the postmaster's group, so descendants are collected by parent pid too.
    """
    live = _live_processes()
    members = {p for p, info in live.items() if p == pid or info.pgid == pid}
    grew = True
    while grew:
        children = {p for p, info in live.items() if info.ppid in members} - members
        members |= children
        grew = bool(children)
    return {p: live[p].start_time for p in members if p in live}


def _still_alive(processes: dict[int, int]) -> dict[int, int]:
    alive: dict[int, int] = {}
    for pid, start_time in processes.items():
        info = _proc_stat(pid)
        if info is not None and info.start_time == start_time and _running(pid, info):
            alive[pid] = start_time
    return alive


def _signal_all(processes: dict[int, int], sig: int) -> None:
    for pid in _still_alive(processes):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(processes: dict[int, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _still_alive(processes):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


class ManagedProcess:
    """A long-running child process known by its pid file and log file."""

    def __init__(self, name: str, pid_path: Path, log_path: Path) -> None:
        self.name = name
        self.pid_path = pid_path
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def _recorded(self) -> tuple[int, int] | None:
        """(pid, start time) from the pid file."""
        try:
            pid_text, start_text = self.pid_path.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return int(pid_text), int(start_text)

    def pid(self) -> int | None:
        """The recorded pid if that very process is still alive."""
        recorded = self._recorded()
        if recorded is None:
            return None
        pid, start_time = recorded
        stat = _proc_stat(pid)
        if stat is None or stat.start_time != start_time or not _running(pid, stat):
            self._reap()
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def has_exited(self) -> bool:
        """True when the child we spawned in this process has already died and is still the one recorded.

        Another Stack object on the same run dir (the CLI, another test's) may
        have restarted the component since: our child's death says nothing then.
        """
        if self._popen is None or self._popen.poll() is None:
            return False
        recorded = self._recorded()
        return recorded is not None and recorded[0] == self._popen.pid

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        run_as: RunAs | None = None,
    ) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        extra = run_as.popen_kwargs() if run_as else {}
        with self.log_path.open("ab") as log:
            log.write(f"\n--- devstack: starting {self.name} at {time.ctime()} ---\n".encode())
            log.flush()
            self._popen = subprocess.Popen(  # type: ignore[call-overload]
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: pgid == pid
                **extra,
            )
        assert self._popen is not None
        pid = int(self._popen.pid)
        stat = _proc_stat(pid)
        start_time = stat.start_time if stat else 0
        self.pid_path.write_text(f"{pid} {start_time}\n")
        return pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the leader, wait for its whole tree, then SIGKILL what is left."""
        pid = self.pid()
        if pid is not None:
            tree = process_tree(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if not _wait_gone(tree, timeout):
                tree |= process_tree(pid)  # children it forked meanwhile
                _signal_all(tree, signal.SIGKILL)
                if not _wait_gone(tree, 10.0):
                    raise StackError(f"{self.name}: processes {sorted(_still_alive(tree))} survived SIGKILL")
        self._reap()
        self.pid_path.unlink(missing_ok=True)

    def kill(self, sig: int) -> None:
        """Send `sig` to the process and all its descendants, as a crash would.

        For SIGKILL, also wait until they are gone.
        """
        pid = self.pid()
        if pid is None:
            raise StackError(f"{self.name} is not running")
        tree = process_tree(pid)
        _signal_all(tree, sig)
        if sig == signal.SIGKILL:
            _wait_gone(tree, 10.0)
            self._reap()
            self.pid_path.unlink(missing_ok=True)

    def _reap(self) -> None:
        # Collect the exit status of a child we spawned, so no zombie lingers.
        if self._popen is not None and self._popen.poll() is not None:
            self._popen = None


def run_command(
    argv: Sequence[str],
    *,
    log_path: Path,
    what: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    run_as: RunAs | None = None,
    stdin_text: str | None = None,
) -> str:
    """Run a one-shot command; its output goes to `log_path` and is returned.

    Raises StackError naming `what` with the tail of the output on failure.
    """
    extra = run_as.popen_kwargs() if run_as else {}
    try:
        result = subprocess.run(  # type: ignore[call-overload]
            list(argv),
            input=stdin_text,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            start_new_session=True,
            **extra,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s") from exc
    output = str(result.stdout) + str(result.stderr)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n--- devstack: {what} (exit {result.returncode}) ---\n{output}")
    if result.returncode != 0:
        last = "\n".join(output.strip().splitlines()[-20:])
        raise StackError(f"{what} failed (exit {result.returncode}):\n{last}")
    return output
