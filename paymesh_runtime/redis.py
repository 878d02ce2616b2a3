"""Redis client construction and its health probe."""

from __future__ import annotations

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from paymesh_runtime.health import Probe

# A pooled connection that sat idle this long is checked with a PING before
# its next command, so a connection Redis closed meanwhile (a restart, a
# failover, an idle timeout) is replaced instead of failing a caller's request.
IDLE_CHECK_SECONDS = 5


def create_redis(url: SecretStr) -> Redis:
    # A command that fails because its connection turned out closed is sent
    # once more on a new connection: a request that arrives within
    # IDLE_CHECK_SECONDS of a restart would otherwise fail on each stale pooled
    # connection in turn. A connection lost after the command was sent may have
    # lost only the reply, so every command sent through this client must be
    # safe to run twice (auth_svc's scripts are: a rotation run again answers
    # as the first run did). Only ConnectionError is retried: a TimeoutError
    # goes to the caller, whose request fails as DEPENDENCY_UNAVAILABLE.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    return Redis.from_url(
        url.get_secret_value(),
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=IDLE_CHECK_SECONDS,
        retry=retry,
    )


def redis_probe(client: Redis) -> Probe:
    async def probe() -> None:
        await client.ping()

    return probe
