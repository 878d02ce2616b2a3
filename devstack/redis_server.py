"""Redis: one in-memory server (no persistence) that requires a password.

The password goes into a mode-600 config file rather than onto the command
line, so it never shows up in `ps`.
"""

from __future__ import annotations

import os
import shutil

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.components import Component
from devstack.ports import HOST
from devstack.procs import StackError


class Redis(Component):
    name = "redis"
    start_timeout = 20.0
    stop_timeout = 10.0

    @property
    def config_path(self) -> str:
        return str(self.ctx.run_dir / "redis" / "redis.conf")

    def address(self) -> str:
        return f"{HOST}:{self.ctx.ports.redis}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.redis]

    def prepare(self) -> None:
        data_dir = self.ctx.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = "\n".join(
            [
                f"port {self.ctx.ports.redis}",
                f"bind {HOST}",
                'save ""',
                "appendonly no",
                "daemonize no",
                'logfile ""',  # stdout, which devstack sends to logs/redis.log
                f"dir {data_dir}",
                f"requirepass {self.ctx.secrets.redis_password}",
            ]
        )
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(config + "\n")

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis: redis-server not on PATH; run devstack/bootstrap.sh")
        return [binary, self.config_path]

    def is_healthy(self) -> bool:
        client = redis.Redis(
            host=HOST,
            port=self.ctx.ports.redis,
            password=self.ctx.secrets.redis_password,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),  # one answer now, not retries with backoff
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
