"""The GIL's switch interval a service runs with (paymesh_runtime.gil)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest

from paymesh_runtime import gil


@pytest.fixture
def restored_interval() -> Iterator[None]:
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)


def test_a_waiting_thread_gets_the_gil_within_the_handover(restored_interval: None) -> None:
    gil.hand_over_sooner()
    assert sys.getswitchinterval() == pytest.approx(gil.HANDOVER_SECONDS)

    # A thread that wants the GIL while this one spins in Python for 200 ms gets it once per switch
    # interval: ~38 times with CPython's default 5 ms, ~285 here. A third of that still tells them apart.
    stop = threading.Event()
    turns = 0

    def waiter() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            time.sleep(0)  # releases the GIL and asks for it again

    thread = threading.Thread(target=waiter)
    thread.start()
    spin_until = time.perf_counter() + 0.2
    while time.perf_counter() < spin_until:
        pass
    stop.set()
    thread.join()
    assert turns > 100
