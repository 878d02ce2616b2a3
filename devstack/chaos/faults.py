"""Carries out a fault schedule (schedule.py) against a running stack and the processor simulator.

Each lane runs its faults one after another at their planned times (later if
the previous one took longer, e.g. a slow restart); a fault that would start
after the workload ended is skipped. Every fault ends by restoring what it
broke, and `restore` brings back anything still broken before the run settles.

devstack's `kill_component` signals a component's whole process tree; the
PostgreSQL fault must kill the postmaster alone (its backends then notice
and exit by themselves, as after a real crash), which devstack has no hook
for, so `kill_postmaster` does it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence

from devstack.chaos.model import FaultRecord
from devstack.chaos.schedule import Fault, baseline_settings
from devstack.chaos.simulator import SimulatorClient
from devstack.procs import StackError, is_running, process_tree
from devstack.stack import Stack

PAUSABLE = ("kafka", "redis")
BACKENDS_EXIT_S = 30.0


def kill_postmaster(stack: Stack) -> None:
    """kill -9 of PostgreSQL's postmaster only; waits until its backends have exited too."""
    pid = stack.component("postgres").process.pid()
    if pid is None:
        raise StackError("postgres is not running")
    tree = process_tree(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + BACKENDS_EXIT_S
    while any(is_running(member) for member in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [member for member in tree if is_running(member)]
    if survivors:  # a backend busy in a long statement: finish the crash
        for member in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)


class FaultRunner:
    def __init__(
        self, stack: Stack, simulator: SimulatorClient, clock: Callable[[], float], say: Callable[[str], None]
    ) -> None:
        self._stack = stack
        self._simulator = simulator
        self._clock = clock
        self._say = say
        self._paused: set[str] = set()
        self.records: list[FaultRecord] = []

    async def run(self, schedule: Sequence[Fault], origin: float, stop_at: float) -> None:
        """Both lanes, `origin` being the workload's start on the clock; nothing starts after `stop_at`."""
        lanes = sorted({fault.lane for fault in schedule})
        await asyncio.gather(*(self._lane([f for f in schedule if f.lane == lane], origin, stop_at) for lane in lanes))

    async def _lane(self, faults: Sequence[Fault], origin: float, stop_at: float) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, origin + fault.at - self._clock()))
            began = self._clock()
            if began >= stop_at:
                self.records.append(self._record(fault, origin, began, began, "skipped: the workload had ended"))
                continue
            self._say(f"+{began - origin:6.1f}s  fault: {fault.label}, holding {fault.hold:.1f}s")
            error = ""
            try:
                await self._inject(fault)
            except Exception as exc:  # the run goes on; restore() tries again, the checks still run
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self._say(f"+{self._clock() - origin:6.1f}s  fault {fault.label} failed: {error}")
            restored = self._clock()
            self.records.append(self._record(fault, origin, began, restored, error))
            self._say(f"+{restored - origin:6.1f}s  restored: {fault.kind} {fault.target}")

    def _record(self, fault: Fault, origin: float, began: float, restored: float, error: str) -> FaultRecord:
        return FaultRecord(fault.lane, fault.kind, fault.target, fault.label, origin + fault.at, began, restored, error)

    async def _inject(self, fault: Fault) -> None:
        stack, target = self._stack, fault.target
        if fault.lane == "processor":
            await self._simulator.configure(dict(fault.settings))
            try:
                await asyncio.sleep(fault.hold)
            finally:
                await self._simulator.configure(baseline_settings())
        elif fault.kind == "sigstop":
            await asyncio.to_thread(stack.kill_component, target, signal.SIGSTOP)
            self._paused.add(target)
            try:
                await asyncio.sleep(fault.hold)
            finally:
                await asyncio.to_thread(stack.kill_component, target, signal.SIGCONT)
                self._paused.discard(target)
        else:
            if fault.kind == "kill9" and target == "postgres":
                await asyncio.to_thread(kill_postmaster, stack)
            elif fault.kind == "kill9":
                await asyncio.to_thread(stack.kill_component, target, signal.SIGKILL)
            elif fault.kind == "sigterm":
                await asyncio.to_thread(stack.stop_component, target)  # SIGTERM, then waits for the exit
            else:
                raise ValueError(f"unknown fault {fault.kind}")
            await asyncio.sleep(fault.hold)
            await asyncio.to_thread(stack.start_component, target)

    async def restore(self) -> None:
        """Resumes paused components, resets the simulator and starts whatever is not running."""
        for name in PAUSABLE:
            with contextlib.suppress(StackError):
                await asyncio.to_thread(self._stack.kill_component, name, signal.SIGCONT)
        self._paused.clear()
        await self._simulator.configure(baseline_settings())
        await asyncio.to_thread(self._stack.up)
