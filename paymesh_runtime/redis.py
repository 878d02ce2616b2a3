"""Redis client construction and its health probe."""

from __future__ import annotations

from pydantic import SecretStr
from redis.asyncio import Redis

from paymesh_runtime.health import Probe


def create_redis(url: SecretStr) -> Redis:
    return Redis.from_url(url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2)


def redis_probe(client: Redis) -> Probe:
    async def probe() -> None:
        await client.ping()

    return probe
