"""Session fixtures: one test-profile stack per pytest session, always torn down.

- ``infra``: PostgreSQL, Redis and Kafka only (integration tests).
- ``stack``: everything, services and Envoy included (end-to-end tests).

Both share one ``devstack.stack.Stack`` on ``PAYMESH_TEST_PORT_BASE`` (default
30000) in ``.run/test-<base>``. If nothing of that stack is running when the
session starts, its run dir is wiped first so every session starts from
empty databases and topics. ``PAYMESH_KEEP_STACK=1`` leaves the stack running
after the session (and reuses a running one) for debugging; stop it with
``python -m devstack down --profile test``.

At the end of a session that used the stack, no log of it may hold a
credential: the stack's own secrets, or any password, token, card token or
secret the tests sent or got over HTTP, or a JWT or bearer header
(tests/secret_values.py; a value the tests themselves put in a URL path may
be in the path field of Envoy's access log, and only there).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from devstack.stack import Stack
from tests.secret_values import SecretRecorder, leaks

KEEP_STACK = os.environ.get("PAYMESH_KEEP_STACK") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real PostgreSQL, Redis or Kafka")
    config.addinivalue_line("markers", "e2e: needs the whole stack: services and Envoy")


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run


def _exit_on_sigterm() -> None:
    # A SIGTERM'd pytest would skip both fixture teardown and atexit; turning
    # it into SystemExit runs them. Only if nobody else handles SIGTERM.
    def handler(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)


# The stacks this session used, for the end-of-session check of their logs.
_USED: list[Stack] = []


@pytest.fixture(scope="session", autouse=True)
def _no_credential_in_any_log() -> Iterator[None]:
    recorder = SecretRecorder()
    recorder.install()
    try:
        yield
    finally:
        recorder.uninstall()
    for stack in _USED:
        own = [getattr(stack.secrets, f.name) for f in dataclasses.fields(stack.secrets)]
        found = leaks(stack.run_dir / "logs", [*recorder.values, *own], recorder.paths)
        assert not found, "credentials in the test stack's logs:\n" + "\n".join(found)


@pytest.fixture(scope="session")
def _test_stack() -> Iterator[Stack]:
    stack = Stack.for_profile("test")
    _USED.append(stack)
    if not stack.pids():
        stack.wipe()  # a fresh stack (empty databases and topics) for a fresh session
    teardown = _once(lambda: None if KEEP_STACK else stack.down())
    atexit.register(teardown)  # backstop if the session dies before teardown
    _exit_on_sigterm()
    try:
        yield stack
    finally:
        teardown()


@pytest.fixture(scope="session")
def infra(_test_stack: Stack) -> Stack:
    """The test stack with PostgreSQL, Redis and Kafka running."""
    _test_stack.up(["infra"])
    return _test_stack


@pytest.fixture(scope="session")
def stack(_test_stack: Stack) -> Stack:
    """The whole test stack: infra, the four services and Envoy."""
    _test_stack.up()
    return _test_stack
