"""Public idempotency keys (the `Idempotency-Key` header of CreatePayment, CreateRefund, CreatePayout).

Semantics:
- A key is scoped to the caller (the authenticated user id): two users may
  use the same key independently.
- The key row is inserted in the same transaction as the resource it creates
  (payment, refund, payout), IN_PROGRESS and pointing at that resource.
- When the resource reaches the state in which the method answers
  (REQUIRES_CAPTURE or final for a payment; final for a refund; PROCESSING or
  final for a payout), the response (status code + body) is written into the
  key row in the same transaction as that state change. A resource finished
  by the recovery worker after a crash completes its key the same way.
- Another request with the key: a different body (fingerprint of method and
  request bytes) → ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED; the same body while
  IN_PROGRESS → ABORTED IDEMPOTENCY_KEY_IN_USE; the same body once DONE → the
  recorded response, replayed byte for byte (an error replays as the same
  error). A recorded failure therefore never turns into a success.
- Keys live at least `retention` (24 h by default) and are pruned after.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Interval, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from payment_svc.store import idempotency_keys
from paymesh_runtime.errors import Aborted, AlreadyExists, InvalidArgument
from paymesh_runtime.idempotency_key import HEADER, MAX_LENGTH, normalized
from paymesh_runtime.sql import compiled_once

OK = 0  # grpc.StatusCode.OK's numeric value


@dataclass(frozen=True)
class Recorded:
    """A recorded response: grpc status code number and body (the resource, or a google.rpc.Status)."""

    code: int
    body: bytes


def validate_key(raw: str | None) -> str:
    """The required key (paymesh_runtime.idempotency_key's rules), else IDEMPOTENCY_KEY_REQUIRED."""
    key = normalized(raw or "")
    if key is None:
        raise InvalidArgument(
            "IDEMPOTENCY_KEY_REQUIRED",
            f"this method requires an Idempotency-Key header of 1 to {MAX_LENGTH} printable characters",
            field=HEADER,
        )
    return key


def fingerprint(method: str, request_bytes: bytes) -> bytes:
    return hashlib.sha256(method.encode() + b"\0" + request_bytes).digest()


def previous_answer(
    key: str, print_: bytes, *, stored_fingerprint: bytes, resource_id: uuid.UUID, done: Recorded | None
) -> Recorded:
    """What a request with a used key gets: the first request's recorded answer if it asked the same
    and is done; ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED if it asked something else; ABORTED
    IDEMPOTENCY_KEY_IN_USE while the first is still running."""
    if stored_fingerprint != print_:
        raise AlreadyExists(
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotency key was used with a different request",
            metadata={"idempotency_key": key},
        )
    if done is None:
        raise Aborted(
            "IDEMPOTENCY_KEY_IN_USE",
            "a request with this idempotency key is still being processed; retry later",
            metadata={"idempotency_key": key, "resource_id": str(resource_id)},
        )
    return done


class IdempotencyKeys:
    def __init__(self, retention: timedelta) -> None:
        self._retention = retention
        self._keys = idempotency_keys
        k = idempotency_keys
        self._reserve = compiled_once(
            insert(k)
            .values(
                caller_id=bindparam("caller_id"),
                idempotency_key=bindparam("idempotency_key"),
                method=bindparam("method"),
                fingerprint=bindparam("fingerprint"),
                resource_id=bindparam("resource_id"),
                state="IN_PROGRESS",
                expires_at=func.now() + bindparam("retention", type_=Interval),
            )
            .on_conflict_do_nothing()
            .returning(k.c.idempotency_key)
        )

    async def lookup(self, conn: AsyncConnection, caller: str, key: str, print_: bytes) -> Recorded | None:
        """The recorded response of a finished request; None if the key is unused. Raises REUSED / IN_USE."""
        k = self._keys
        row = (await conn.execute(select(k).where(k.c.caller_id == caller, k.c.idempotency_key == key))).first()
        if row is None:
            return None
        done = Recorded(row.response_code, row.response_body) if row.state == "DONE" else None
        return previous_answer(key, print_, stored_fingerprint=row.fingerprint, resource_id=row.resource_id, done=done)

    async def reserve(
        self, conn: AsyncConnection, caller: str, key: str, method: str, print_: bytes, resource_id: uuid.UUID
    ) -> Recorded | None:
        """Claims the key for a new resource in the caller's transaction.

        None: claimed, go on. A Recorded: the key was used before (roll back, replay it).
        A concurrent request with the key waits here on the unique index until
        the first one commits, then sees its row.
        """
        params = {
            "caller_id": caller,
            "idempotency_key": key,
            "method": method,
            "fingerprint": print_,
            "resource_id": resource_id,
            "retention": self._retention,
        }
        claimed = (await conn.execute(self._reserve, params)).first()
        if claimed is not None:
            return None
        recorded = await self.lookup(conn, caller, key, print_)
        assert recorded is not None  # the conflicting row exists (no deletes run on live keys)
        return recorded

    async def complete(self, conn: AsyncConnection, resource_id: uuid.UUID, recorded: Recorded) -> None:
        """Records the response of the request that created `resource_id` (if it came with a key)."""
        k = self._keys
        await conn.execute(
            k.update()
            .where(k.c.resource_id == resource_id, k.c.state == "IN_PROGRESS")
            .values(state="DONE", response_code=recorded.code, response_body=recorded.body, completed_at=func.now())
        )

    async def prune(self, conn: AsyncConnection, limit: int = 1000) -> int:
        """Deletes finished keys past their retention."""
        k = self._keys
        expired = (
            select(k.c.caller_id, k.c.idempotency_key)
            .where(k.c.expires_at < func.now(), k.c.state == "DONE")
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await conn.execute(delete(k).where(tuple_(k.c.caller_id, k.c.idempotency_key).in_(expired)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
