"""auth_svc's session scripts when Redis's reply is lost, against the test stack's real Redis.

A connection that drops after a command was sent leaves its outcome unknown:
the command may have run. The services' Redis client (paymesh_runtime.redis)
then sends it once more on a new connection, so each script must answer a
second run as it answered the first. A proxy in front of Redis lets one
script call through and closes the client's connection instead of passing
its reply on: the script ran, and the client's retry runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from auth_svc.sessions import LoginThrottle, Outcome, Sessions
from devstack.stack import Stack
from paymesh_runtime.redis import create_redis

pytestmark = pytest.mark.integration


class ReplyLosingProxy:
    """A TCP proxy to Redis that, when armed, forwards the next script call (EVALSHA) and then closes
    the client's connection in place of its reply."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.armed = False
        self.lost_replies = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """After the client closed its connections: waits for each to be torn down."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)  # type: ignore[arg-type]
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        losing = asyncio.Event()  # this connection's next reply is to be lost

        async def requests() -> None:
            while data := await client_reader.read(65536):
                if self.armed and b"EVALSHA" in data.upper():
                    self.armed = False
                    losing.set()
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def replies() -> None:
            while data := await upstream_reader.read(65536):
                if losing.is_set():
                    self.lost_replies += 1
                    return  # the script ran; its caller never hears of it
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self._connections.discard(connection)  # type: ignore[arg-type]


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))


async def _with_lost_replies(stack: Stack) -> None:
    url = stack.redis_url(0)
    upstream = urlsplit(url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    proxy = ReplyLosingProxy(upstream.hostname, upstream.port)
    client = create_redis(SecretStr(_through(url, await proxy.start())))
    sessions = Sessions(client, idle_ttl_seconds=600, max_lifetime_seconds=3600)
    throttle = LoginThrottle(client, max_failures=2, window_seconds=60)
    try:
        first = await sessions.start("user-lost-reply")  # loads the scripts: later calls are EVALSHA alone
        warm = await sessions.rotate(first)
        assert warm.outcome is Outcome.OK
        assert warm.token is not None

        proxy.armed = True
        rotated = await sessions.rotate(warm.token)
        assert proxy.lost_replies == 1  # the premise: the script ran, its reply was lost, the client retried
        assert rotated.outcome is Outcome.OK
        assert rotated.user_id == "user-lost-reply"
        assert rotated.token is not None
        # The successor is the one session: it rotates on, and the used token is still a replay.
        successor = await sessions.rotate(rotated.token)
        assert successor.outcome is Outcome.OK
        assert (await sessions.rotate(warm.token)).outcome is Outcome.REUSED

        email = "lost-reply@example.com"
        assert (await throttle.reserve(email))[0] is not None
        proxy.armed = True
        attempt, wait = await throttle.reserve(email)  # the second of two allowed
        assert proxy.lost_replies == 2
        assert attempt is not None
        assert wait == 0
        assert (await throttle.reserve(email))[0] is None  # recorded once: the third is throttled
    finally:
        await client.aclose()
        await proxy.close()


def test_a_script_whose_reply_was_lost_answers_its_retry_as_it_answered_the_first_run(infra: Stack) -> None:
    asyncio.run(_with_lost_replies(infra))
