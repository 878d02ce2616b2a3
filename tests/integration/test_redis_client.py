"""The services' Redis client across a Redis restart, against the test stack's real Redis: requests
that arrive right after the restart succeed on every stale pooled connection, and a Redis that is down
fails fast with a ConnectionError (which the services map to DEPENDENCY_UNAVAILABLE)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from devstack.stack import Stack
from paymesh_runtime.redis import create_redis

pytestmark = pytest.mark.integration
POOLED = 4


async def _fill_the_pool(stack: Stack) -> None:
    client = create_redis(SecretStr(stack.redis_url(1)))
    try:
        # Blocking pops hold a connection each: POOLED connections in the pool afterwards.
        await asyncio.gather(*(client.blpop([f"paymesh:test:nothing:{n}"], timeout=0.2) for n in range(POOLED)))
        assert len(client.connection_pool._available_connections) == POOLED  # the premise
        stack.stop_component("redis")
        try:
            with pytest.raises(RedisConnectionError):
                await client.ping()
        finally:
            stack.start_component("redis")
        # Straight after the restart, within the idle check's interval: every pooled connection is
        # stale, and each request must still succeed.
        replies = await asyncio.gather(
            *(client.blpop([f"paymesh:test:nothing:{n}"], timeout=0.2) for n in range(POOLED)),
            client.ping(),
        )
        assert replies == [None] * POOLED + [True]
    finally:
        await client.aclose()


def test_requests_right_after_a_redis_restart_succeed_on_stale_pooled_connections(infra: Stack) -> None:
    asyncio.run(_fill_the_pool(infra))
