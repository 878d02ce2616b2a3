"""Which replica this process is, and proof that the replica's previous process is gone.

A replica has a stable name (PAYMENT_REPLICA_ID; by default the host name,
which a Kubernetes pod keeps across container restarts). At start the process
takes a PostgreSQL advisory lock on that name, on a connection it keeps open
for its lifetime: PostgreSQL holds such a lock only while its session lives,
so once a process has it, no other live process carries the name. It then
counts an incarnation (table `replicas`), leases as `<name>#<incarnation>`,
and gives back at once every lease its earlier incarnations held: those
processes are dead, so the payments they were working are resumed now
instead of after their leases lapse. Two live replicas still never work one
payment: their names differ, and a second process with a name in use waits
for the lock.

If the lock's connection breaks while the process runs (a database restart),
the process takes the lock again; should another process have taken the name
meanwhile, this one stops (SIGTERM to itself) rather than work beside it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

import asyncpg

from paymesh_runtime.failures import DATABASE_FAILURES

log = logging.getLogger(__name__)

# Advisory lock namespace ("pmrp"), so replica locks never collide with the outbox relay's shard locks.
LOCK_NAMESPACE = 0x706D7270
CHECK_SECONDS = 5.0

_TRY_LOCK = "SELECT pg_try_advisory_lock($1::int, hashtext($2))"
_NEXT_INCARNATION = """
INSERT INTO replicas (replica_id, incarnation) VALUES ($1, 1)
ON CONFLICT (replica_id) DO UPDATE SET incarnation = replicas.incarnation + 1, started_at = now()
RETURNING incarnation
"""


@dataclass
class Replica:
    name: str
    incarnation: int
    _dsn: str
    _conn: asyncpg.Connection

    @property
    def owner(self) -> str:
        """The lease owner id of this process."""
        return f"{self.name}#{self.incarnation}"

    @classmethod
    async def claim(cls, dsn: str, name: str, wait_seconds: float = 120.0) -> Replica:
        """Takes the replica's name (waiting while another live process holds it) and a new incarnation."""
        conn = await _lock(dsn, name, wait_seconds)
        incarnation = int(await conn.fetchval(_NEXT_INCARNATION, name))
        log.info("replica %s, incarnation %d", name, incarnation)
        return cls(name, incarnation, dsn, conn)

    async def watch(self) -> None:
        """Keeps the lock: after its connection broke, takes it again or stops this process."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self._conn.fetchval("SELECT 1")
                continue
            except DATABASE_FAILURES:
                log.warning("replica %s lost its lock connection; taking the lock again", self.name)
            try:
                self._conn = await _lock(self._dsn, self.name, wait_seconds=0)
            except ReplicaTaken:
                log.critical("replica %s: another process took this replica's name; stopping", self.name)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except DATABASE_FAILURES:
                continue  # the database is still away: try again next round

    async def close(self) -> None:
        await self._conn.close()


class ReplicaTaken(Exception):
    """Another live process holds this replica's name."""


async def _lock(dsn: str, name: str, wait_seconds: float) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    try:
        while not await conn.fetchval(_TRY_LOCK, LOCK_NAMESPACE, name):
            if asyncio.get_running_loop().time() >= deadline:
                raise ReplicaTaken(f"replica name {name!r} is held by another live process")
            log.warning("replica name %s is held by another live process; waiting", name)
            await asyncio.sleep(1.0)
    except BaseException:
        await conn.close()
        raise
    return conn
