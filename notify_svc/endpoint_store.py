"""Webhook endpoints and their deliveries, as the API reads and changes them (SQLAlchemy Core).

Each method is one transaction. Changes that stop deliveries (delete,
disable) lock the endpoint row first and then cancel its pending deliveries,
the order the delivery worker locks in too; the consumer reads endpoints FOR
SHARE, so a delete or disable racing an incoming event waits for it and then
cancels what it added. A test event or a redelivery locks the endpoint FOR
SHARE and proceeds only while it is live and enabled.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, bindparam, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notify_svc.endpoint_health import CANCEL_PENDING, add_own_event
from notify_svc.store import cursor_tuple
from notify_svc.tables import MAX_SUBJECT_LENGTH, WEBHOOK, delivery_attempt, notification, webhook_endpoint


@dataclass(frozen=True)
class EndpointRecord:
    endpoint_id: uuid.UUID
    owner_id: str
    url: str
    event_types: tuple[str, ...]
    create_time: datetime
    description: str = ""
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    update_time: datetime | None = None
    previous_secret_expires_at: datetime | None = None
    failing_since: datetime | None = None


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    start_time: datetime
    latency_ms: int
    status_code: int | None
    response_body: str | None
    error: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    state: str
    attempts: int
    create_time: datetime
    delivered_time: datetime | None
    next_attempt_at: datetime
    last_error: str | None
    attempt_log: tuple[AttemptRecord, ...] = ()


class Refusal(enum.Enum):
    """Why a test event or redelivery was not made."""

    NO_ENDPOINT = "NO_ENDPOINT"  # deleted meanwhile
    DISABLED = "DISABLED"
    NO_DELIVERY = "NO_DELIVERY"
    STILL_PENDING = "STILL_PENDING"


@dataclass(frozen=True)
class OwnEvent:
    """An event notify makes itself (webhook.test), as stored and delivered."""

    event_id: uuid.UUID
    event_type: str
    payload: bytes  # the envelope, protobuf binary
    body: str  # the envelope as the JSON delivered


_ROTATE = text(
    "UPDATE webhook_endpoint SET "
    "previous_secret_sealed = CASE WHEN :overlap > 0 THEN secret_sealed END, "
    "previous_secret_expires_at = CASE WHEN :overlap > 0 THEN now() + make_interval(secs => :overlap) END, "
    "secret_sealed = :sealed, update_time = now() "
    "WHERE endpoint_id = :id AND deleted_at IS NULL RETURNING *"
).bindparams(bindparam("overlap", type_=Float()), bindparam("id", type_=UUID(as_uuid=True)))

# A new retry schedule: due now, from now, after the attempts already made.
_REDELIVER = text(
    "UPDATE notification SET state = 'PENDING', next_attempt_at = now(), claim_token = NULL, lease_expires_at = NULL, "
    "last_error = NULL, delivered_time = NULL, dlq_published_at = NULL, schedule_start = now(), "
    "schedule_offset = attempts "
    "WHERE notification_id = :delivery AND endpoint_id = :endpoint AND channel = 'WEBHOOK' AND state <> 'PENDING' "
    "RETURNING notification_id"
).bindparams(bindparam("delivery", type_=UUID(as_uuid=True)), bindparam("endpoint", type_=UUID(as_uuid=True)))


class EndpointStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- endpoints -------------------------------------------------------------

    async def create_endpoint(
        self,
        endpoint_id: uuid.UUID,
        owner_id: str,
        url: str,
        event_types: Sequence[str],
        secret_sealed: bytes,
        description: str = "",
    ) -> EndpointRecord:
        e = webhook_endpoint
        values = {"endpoint_id": endpoint_id, "owner_id": owner_id, "url": url, "event_types": list(event_types)}
        async with self._engine.begin() as conn:
            insert = e.insert().values(**values, secret_sealed=secret_sealed, description=description)
            row = (await conn.execute(insert.returning(e))).one()
        return endpoint_record(row)

    async def get_endpoint(self, endpoint_id: uuid.UUID) -> EndpointRecord | None:
        e = webhook_endpoint
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(e).where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None)))
            ).one_or_none()
        return endpoint_record(row) if row is not None else None

    async def list_endpoints(
        self, owner_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[EndpointRecord]:
        """The owner's live endpoints in creation order, strictly after the cursor."""
        e = webhook_endpoint
        query = select(e).where(e.c.owner_id == owner_id, e.c.deleted_at.is_(None))
        if after is not None:
            query = query.where(tuple_(e.c.create_time, e.c.endpoint_id) > cursor_tuple(after))
        query = query.order_by(e.c.create_time, e.c.endpoint_id).limit(limit)
        async with self._engine.connect() as conn:
            return [endpoint_record(row) for row in (await conn.execute(query)).all()]

    async def update_endpoint(self, endpoint_id: uuid.UUID, changes: Mapping[str, object]) -> EndpointRecord | None:
        """Sets url, event_types and/or description of a live endpoint; None if it is gone."""
        e = webhook_endpoint
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    e.update()
                    .where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None))
                    .values(**changes, update_time=func.now())
                    .returning(e)
                )
            ).one_or_none()
        return endpoint_record(row) if row is not None else None

    async def delete_endpoint(self, endpoint_id: uuid.UUID) -> bool:
        """Deletes a live endpoint, forgets its secrets and cancels its pending deliveries."""
        e = webhook_endpoint
        async with self._engine.begin() as conn:
            deleted = await conn.scalar(
                e.update()
                .where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None))
                .values(
                    deleted_at=func.now(),
                    secret_sealed=None,
                    previous_secret_sealed=None,
                    previous_secret_expires_at=None,
                )
                .returning(e.c.endpoint_id)
            )
            if deleted is None:
                return False
            await conn.execute(CANCEL_PENDING, {"ids": [endpoint_id], "why": "endpoint deleted"})
        return True

    async def disable_endpoint(self, endpoint_id: uuid.UUID) -> EndpointRecord | None:
        """Disables a live endpoint (BY_OWNER) and cancels its pending deliveries; one already disabled stays
        as it is (its reason kept). None if it is gone."""
        e = webhook_endpoint
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(e).where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None)).with_for_update()
                )
            ).one_or_none()
            if row is None or row.disabled_at is not None:
                return endpoint_record(row) if row is not None else None
            row = (
                await conn.execute(
                    e.update()
                    .where(e.c.endpoint_id == endpoint_id)
                    .values(disabled_at=func.now(), disabled_reason="BY_OWNER", update_time=func.now())
                    .returning(e)
                )
            ).one()
            await conn.execute(CANCEL_PENDING, {"ids": [endpoint_id], "why": "endpoint disabled"})
        return endpoint_record(row)

    async def enable_endpoint(self, endpoint_id: uuid.UUID) -> EndpointRecord | None:
        """Enables a live endpoint with a clean failure record; None if it is gone."""
        e = webhook_endpoint
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    e.update()
                    .where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None))
                    .values(disabled_at=None, disabled_reason=None, failing_since=None, update_time=func.now())
                    .returning(e)
                )
            ).one_or_none()
        return endpoint_record(row) if row is not None else None

    async def rotate_secret(
        self, endpoint_id: uuid.UUID, sealed: bytes, overlap_seconds: float
    ) -> EndpointRecord | None:
        """Makes `sealed` the signing secret; the current one signs too for `overlap_seconds` (0: not at all)."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(_ROTATE, {"id": endpoint_id, "sealed": sealed, "overlap": overlap_seconds})
            ).one_or_none()
        return endpoint_record(row) if row is not None else None

    # --- deliveries --------------------------------------------------------------

    async def send_own_event(self, endpoint: EndpointRecord, event: OwnEvent) -> DeliveryRecord | Refusal:
        """Queues a delivery of `event` (webhook.test) to the endpoint, if it is live and enabled."""
        async with self._engine.begin() as conn:
            refusal = await _usable(conn, endpoint.endpoint_id)
            if refusal is not None:
                return refusal
            await add_own_event(conn, event.event_id, event.event_type)
            delivery_id = uuid.uuid4()
            await conn.execute(
                notification.insert().values(
                    notification_id=delivery_id,
                    user_id=endpoint.owner_id,
                    channel=WEBHOOK,
                    endpoint_id=endpoint.endpoint_id,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    event_payload=event.payload,
                    subject=f"Webhook {event.event_type}"[:MAX_SUBJECT_LENGTH],
                    body=event.body,
                    create_time=func.clock_timestamp(),
                )
            )
            found = await _deliveries(conn, endpoint.endpoint_id, delivery_id=delivery_id)
        return found[0]

    async def list_deliveries(
        self, endpoint_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[DeliveryRecord]:
        """The endpoint's deliveries, newest first, strictly after the cursor, each with its attempts."""
        async with self._engine.connect() as conn:
            return await _deliveries(conn, endpoint_id, after=after, limit=limit)

    async def get_delivery(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryRecord | None:
        async with self._engine.connect() as conn:
            found = await _deliveries(conn, endpoint_id, delivery_id=delivery_id)
        return found[0] if found else None

    async def redeliver(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryRecord | Refusal:
        """Makes a finished delivery PENDING again, due now, with a new retry schedule."""
        async with self._engine.begin() as conn:
            refusal = await _usable(conn, endpoint_id)
            if refusal is not None:
                return refusal
            rearmed = await conn.scalar(_REDELIVER, {"delivery": delivery_id, "endpoint": endpoint_id})
            found = await _deliveries(conn, endpoint_id, delivery_id=delivery_id)
        if not found:
            return Refusal.NO_DELIVERY
        return found[0] if rearmed is not None else Refusal.STILL_PENDING


async def _usable(conn: AsyncConnection, endpoint_id: uuid.UUID) -> Refusal | None:
    """Locks the endpoint FOR SHARE (a disable or delete waits for this transaction); why not, if it cannot
    receive."""
    e = webhook_endpoint
    row = (
        await conn.execute(
            select(e.c.disabled_at)
            .where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None))
            .with_for_update(read=True)
        )
    ).one_or_none()
    if row is None:
        return Refusal.NO_ENDPOINT
    return Refusal.DISABLED if row.disabled_at is not None else None


async def _deliveries(
    conn: AsyncConnection,
    endpoint_id: uuid.UUID,
    *,
    delivery_id: uuid.UUID | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 1,
) -> list[DeliveryRecord]:
    n, a = notification, delivery_attempt
    query = select(n).where(n.c.endpoint_id == endpoint_id, n.c.channel == WEBHOOK)
    if delivery_id is not None:
        query = query.where(n.c.notification_id == delivery_id)
    if after is not None:
        query = query.where(tuple_(n.c.create_time, n.c.notification_id) < cursor_tuple(after))
    query = query.order_by(n.c.create_time.desc(), n.c.notification_id.desc()).limit(limit)
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    ids = [row.notification_id for row in rows]
    logged = (
        await conn.execute(select(a).where(a.c.notification_id.in_(ids)).order_by(a.c.notification_id, a.c.attempt))
    ).all()
    log: dict[uuid.UUID, list[AttemptRecord]] = {}
    for entry in logged:
        log.setdefault(entry.notification_id, []).append(
            AttemptRecord(
                entry.attempt, entry.start_time, entry.latency_ms, entry.status_code, entry.response_body, entry.error
            )
        )
    return [
        DeliveryRecord(
            row.notification_id,
            row.endpoint_id,
            row.event_id,
            row.event_type,
            row.state,
            row.attempts,
            row.create_time,
            row.delivered_time,
            row.next_attempt_at,
            row.last_error,
            tuple(log.get(row.notification_id, ())),
        )
        for row in rows
    ]


def endpoint_record(row: Row[tuple[object, ...]]) -> EndpointRecord:
    return EndpointRecord(
        endpoint_id=row.endpoint_id,
        owner_id=row.owner_id,
        url=row.url,
        event_types=tuple(row.event_types),
        create_time=row.create_time,
        description=row.description,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        update_time=row.update_time,
        previous_secret_expires_at=row.previous_secret_expires_at,
        failing_since=row.failing_since,
    )
