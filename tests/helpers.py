"""Small helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import asyncpg

from devstack.stack import Stack

T = TypeVar("T")


def poll_until(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.2) -> T:
    """Call `fn` until it returns something truthy, and return that.

    An exception raised by `fn` counts as "not yet". At the deadline an
    AssertionError reports the last value or exception.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
            last: object = value
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {timeout:.1f}s; last result: {last!r}")
        time.sleep(interval)


def auth_command(stack: Stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m auth_svc <args>` (e.g. create-admin, rotate-keys) with the stack's auth environment."""
    return subprocess.run(
        [sys.executable, "-m", "auth_svc", *args],
        input=stdin,
        env={**os.environ, **stack.env("auth")},
        cwd=stack.component("auth").ctx.repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def fresh_database(stack: Stack, name: str) -> str:
    """A new, empty database of this name on the stack's PostgreSQL (dropped first if there), for a test
    of its own schema; returns its SQLAlchemy URL."""
    admin = await asyncpg.connect(stack.database_url("wallet", driver=""))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return stack.database_url("wallet").rsplit("/", 1)[0] + "/" + name
