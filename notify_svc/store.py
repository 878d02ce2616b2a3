"""notify_svc tables and queries (SQLAlchemy Core).

The invariants live in the schema (migrations/versions/0002): one processed
row per event id, one notification per (event, EMAIL, user) and per (event,
WEBHOOK, endpoint), states and channels by CHECK. Deliveries are claimed with
FOR UPDATE SKIP LOCKED and a lease, and every later update is conditional on
the claim, so replicas never work one delivery at the same time.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import Tuple

from notify_svc.notifications import Plan
from paymesh_runtime.sql import compiled_once

metadata = MetaData()

processed_event = Table(
    "processed_event",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

user_contact = Table(
    "user_contact",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

webhook_endpoint = Table(
    "webhook_endpoint",
    metadata,
    Column("endpoint_id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", ARRAY(String(100)), nullable=False),
    Column("secret_sealed", LargeBinary),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
)

notification = Table(
    "notification",
    metadata,
    Column("notification_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("endpoint_id", UUID(as_uuid=True), ForeignKey("webhook_endpoint.endpoint_id")),
    Column("event_id", UUID(as_uuid=True), ForeignKey("processed_event.event_id"), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("event_payload", LargeBinary, nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False, server_default="PENDING"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("claim_token", UUID(as_uuid=True)),
    Column("last_error", String(500)),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_time", DateTime(timezone=True)),
    Column("dlq_published_at", DateTime(timezone=True)),
)

EMAIL = "EMAIL"
WEBHOOK = "WEBHOOK"
PENDING = "PENDING"
DELIVERED = "DELIVERED"
DEAD_LETTERED = "DEAD_LETTERED"
CANCELED = "CANCELED"
MAX_ERROR_LENGTH = 500
MAX_SUBJECT_LENGTH = 300
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """A timestamp as integer microseconds: exact, for page cursors."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


@dataclass(frozen=True)
class IncomingEvent:
    """A decoded event as the consumer stores it."""

    event_id: uuid.UUID
    event_type: str
    payload: bytes  # the envelope as received (protobuf binary)
    # The envelope as JSON, the body merchants receive: rendered only for an event some endpoint wants.
    webhook_body: Callable[[], str]


@dataclass(frozen=True)
class NotificationRecord:
    notification_id: uuid.UUID
    user_id: str
    channel: str
    event_id: uuid.UUID
    event_type: str
    subject: str
    body: str
    state: str
    attempts: int
    create_time: datetime
    delivered_time: datetime | None


@dataclass(frozen=True)
class EndpointRecord:
    endpoint_id: uuid.UUID
    owner_id: str
    url: str
    event_types: tuple[str, ...]
    create_time: datetime


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery, with what the worker needs to attempt it."""

    notification_id: uuid.UUID
    claim_token: uuid.UUID
    channel: str
    user_id: str
    event_id: uuid.UUID
    event_type: str
    subject: str
    body: str
    attempts: int  # including the attempt this claim is for
    email: str | None  # EMAIL: the recipient's address, if known yet
    endpoint_id: uuid.UUID | None
    url: str | None  # WEBHOOK: None once the endpoint was deleted
    secret_sealed: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeadLetter:
    notification_id: uuid.UUID
    channel: str
    event_id: uuid.UUID
    event_type: str
    event_payload: bytes
    endpoint_id: uuid.UUID | None
    attempts: int
    last_error: str


def _cursor_tuple(after: tuple[datetime, uuid.UUID]) -> Tuple:
    return tuple_(literal(after[0], DateTime(timezone=True)), literal(after[1], UUID(as_uuid=True)))


def _notification(row: Row[tuple[object, ...]]) -> NotificationRecord:
    return NotificationRecord(
        row.notification_id,
        row.user_id,
        row.channel,
        row.event_id,
        row.event_type,
        row.subject,
        row.body,
        row.state,
        row.attempts,
        row.create_time,
        row.delivered_time,
    )


def _endpoint(row: Row[tuple[object, ...]]) -> EndpointRecord:
    return EndpointRecord(row.endpoint_id, row.owner_id, row.url, tuple(row.event_types), row.create_time)


# Hot statements, compiled once (paymesh_runtime.sql).
_FIRST_SEEN = compiled_once(
    insert(processed_event)
    .values(event_id=bindparam("event_id"), event_type=bindparam("event_type"))
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(processed_event.c.event_id)
)
_NOTIFICATION_COLUMNS = (
    "notification_id", "user_id", "channel", "endpoint_id", "event_id", "event_type", "event_payload", "subject",
    "body",
)  # fmt: skip
_ADD_NOTIFICATION = compiled_once(
    insert(notification).values({name: bindparam(name) for name in _NOTIFICATION_COLUMNS}).on_conflict_do_nothing()
)


class NotifyStore:
    """Every write is one transaction; methods name what they guarantee."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- the consumer ----------------------------------------------------------

    async def record_event(self, event: IncomingEvent, plan: Plan) -> bool:
        """Stores an event's notifications once; False if the event id was seen before.

        The processed_event row and the notifications commit together, so a
        redelivered event (relay or consumer retry) finds its id and adds nothing.
        """
        async with self._engine.begin() as conn:
            first = await conn.scalar(_FIRST_SEEN, {"event_id": event.event_id, "event_type": event.event_type})
            if first is None:
                return False
            if plan.contact is not None:
                await self._save_contact(conn, plan)
            await self._add_emails(conn, event, plan)
            await self._add_webhooks(conn, event, plan)
        return True

    @staticmethod
    async def _save_contact(conn: AsyncConnection, plan: Plan) -> None:
        contact = plan.contact
        assert contact is not None
        values = {"email": contact.email[:254], "display_name": contact.display_name[:100], "updated_at": func.now()}
        await conn.execute(
            insert(user_contact)
            .values(user_id=contact.user_id, **values)
            .on_conflict_do_update(index_elements=["user_id"], set_=values)
        )

    @staticmethod
    async def _add_emails(conn: AsyncConnection, event: IncomingEvent, plan: Plan) -> None:
        if not plan.emails:
            return
        rows = [
            {
                "notification_id": uuid.uuid4(),
                "user_id": notice.user_id,
                "channel": EMAIL,
                "endpoint_id": None,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "event_payload": event.payload,
                "subject": notice.subject[:MAX_SUBJECT_LENGTH],
                "body": notice.body,
            }
            for notice in plan.emails
        ]
        await conn.execute(_ADD_NOTIFICATION, rows)

    @staticmethod
    async def _add_webhooks(conn: AsyncConnection, event: IncomingEvent, plan: Plan) -> None:
        if not plan.parties:
            return
        e = webhook_endpoint
        # FOR SHARE: a concurrent DeleteWebhookEndpoint waits for this
        # transaction, then cancels the deliveries it adds.
        endpoints = (
            await conn.execute(
                select(e.c.endpoint_id, e.c.owner_id)
                .where(
                    e.c.owner_id.in_(sorted(plan.parties)),
                    e.c.deleted_at.is_(None),
                    e.c.event_types.overlap([event.event_type, "*"]),
                )
                .with_for_update(read=True)
            )
        ).all()
        if not endpoints:
            return
        body = event.webhook_body()
        rows = [
            {
                "notification_id": uuid.uuid4(),
                "user_id": endpoint.owner_id,
                "channel": WEBHOOK,
                "endpoint_id": endpoint.endpoint_id,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "event_payload": event.payload,
                "subject": f"Webhook {event.event_type}"[:MAX_SUBJECT_LENGTH],
                "body": body,
            }
            for endpoint in endpoints
        ]
        await conn.execute(_ADD_NOTIFICATION, rows)

    # --- the delivery worker ---------------------------------------------------

    async def claim_due(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Reserves up to `limit` due deliveries for this worker for `lease_seconds`.

        SKIP LOCKED lets replicas claim disjoint rows without waiting; the
        lease (next_attempt_at in the future) keeps the rows away from other
        workers after this short transaction commits, and counts the attempt
        before it is made, so a worker that dies mid-send still used one.
        """
        token = uuid.uuid4()
        n = notification
        due = (
            select(n.c.notification_id)
            .where(n.c.state == PENDING, n.c.next_attempt_at <= func.now())
            .order_by(n.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        claim = (
            n.update()
            .where(n.c.notification_id == due.c.notification_id)
            .values(
                attempts=n.c.attempts + 1,
                claim_token=token,
                next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
            )
            .returning(n.c.notification_id)
        )
        async with self._engine.begin() as conn:
            claimed = (await conn.execute(claim)).scalars().all()
            if not claimed:
                return []
            rows = (
                await conn.execute(
                    select(
                        n,
                        user_contact.c.email,
                        webhook_endpoint.c.url,
                        webhook_endpoint.c.secret_sealed,
                    )
                    .outerjoin(user_contact, user_contact.c.user_id == n.c.user_id)
                    .outerjoin(webhook_endpoint, webhook_endpoint.c.endpoint_id == n.c.endpoint_id)
                    .where(n.c.notification_id.in_(claimed))
                )
            ).all()
        return [_delivery(row) for row in rows]

    async def mark_delivered(self, delivery: Delivery) -> bool:
        return await self._finish(delivery, state=DELIVERED, delivered_time=func.now(), last_error=None)

    async def schedule_retry(self, delivery: Delivery, delay_seconds: float, error: str) -> bool:
        return await self._finish(
            delivery,
            next_attempt_at=func.now() + timedelta(seconds=delay_seconds),
            last_error=error[:MAX_ERROR_LENGTH],
        )

    async def mark_dead(self, delivery: Delivery, error: str) -> bool:
        return await self._finish(delivery, state=DEAD_LETTERED, last_error=error[:MAX_ERROR_LENGTH])

    async def mark_canceled(self, delivery: Delivery, reason: str) -> bool:
        return await self._finish(delivery, state=CANCELED, last_error=reason[:MAX_ERROR_LENGTH])

    async def _finish(self, delivery: Delivery, **values: object) -> bool:
        """Applies an attempt's outcome if this worker's claim still holds."""
        n = notification
        async with self._engine.begin() as conn:
            result = await conn.execute(
                n.update()
                .where(
                    n.c.notification_id == delivery.notification_id,
                    n.c.claim_token == delivery.claim_token,
                    n.c.state == PENDING,
                )
                .values(claim_token=None, **values)
            )
        return bool(result.rowcount)

    async def publish_dead_letters(self, publish: Callable[[DeadLetter], Awaitable[None]], limit: int) -> int:
        """Hands dead letters not yet on the DLQ topic to `publish`, then marks them.

        The notification row is its own outbox record: a crash between
        publishing and marking publishes again (at least once).
        """
        n = notification
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(n)
                    .where(n.c.state == DEAD_LETTERED, n.c.dlq_published_at.is_(None))
                    .order_by(n.c.create_time)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                await publish(
                    DeadLetter(
                        row.notification_id,
                        row.channel,
                        row.event_id,
                        row.event_type,
                        row.event_payload,
                        row.endpoint_id,
                        row.attempts,
                        row.last_error or "",
                    )
                )
            if rows:
                await conn.execute(
                    n.update()
                    .where(n.c.notification_id.in_([row.notification_id for row in rows]))
                    .values(dlq_published_at=func.now())
                )
        return len(rows)

    # --- notifications (API) ---------------------------------------------------

    async def list_notifications(
        self, user_id: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[NotificationRecord]:
        """The user's notifications (`user_id` None: everyone's, for admins), newest first, after the cursor."""
        n = notification
        query = select(n)
        if user_id is not None:
            query = query.where(n.c.user_id == user_id)
        if after is not None:
            query = query.where(tuple_(n.c.create_time, n.c.notification_id) < _cursor_tuple(after))
        query = query.order_by(n.c.create_time.desc(), n.c.notification_id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [_notification(row) for row in (await conn.execute(query)).all()]

    # --- webhook endpoints (API) -----------------------------------------------

    async def create_endpoint(
        self, endpoint_id: uuid.UUID, owner_id: str, url: str, event_types: Sequence[str], secret_sealed: bytes
    ) -> EndpointRecord:
        e = webhook_endpoint
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    e.insert()
                    .values(
                        endpoint_id=endpoint_id,
                        owner_id=owner_id,
                        url=url,
                        event_types=list(event_types),
                        secret_sealed=secret_sealed,
                    )
                    .returning(e)
                )
            ).one()
        return _endpoint(row)

    async def get_endpoint(self, endpoint_id: uuid.UUID) -> EndpointRecord | None:
        e = webhook_endpoint
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(e).where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None)))
            ).one_or_none()
        return _endpoint(row) if row is not None else None

    async def list_endpoints(
        self, owner_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[EndpointRecord]:
        """The owner's live endpoints in creation order, strictly after the cursor."""
        e = webhook_endpoint
        query = select(e).where(e.c.owner_id == owner_id, e.c.deleted_at.is_(None))
        if after is not None:
            query = query.where(tuple_(e.c.create_time, e.c.endpoint_id) > _cursor_tuple(after))
        query = query.order_by(e.c.create_time, e.c.endpoint_id).limit(limit)
        async with self._engine.connect() as conn:
            return [_endpoint(row) for row in (await conn.execute(query)).all()]

    async def delete_endpoint(self, endpoint_id: uuid.UUID) -> bool:
        """Deletes a live endpoint, forgets its secret and cancels its pending deliveries."""
        e, n = webhook_endpoint, notification
        async with self._engine.begin() as conn:
            deleted = await conn.scalar(
                e.update()
                .where(e.c.endpoint_id == endpoint_id, e.c.deleted_at.is_(None))
                .values(deleted_at=func.now(), secret_sealed=None)
                .returning(e.c.endpoint_id)
            )
            if deleted is None:
                return False
            # A send in flight right now still completes; its outcome is then
            # discarded because its row is no longer PENDING.
            await conn.execute(
                n.update()
                .where(and_(n.c.endpoint_id == endpoint_id, n.c.state == PENDING))
                .values(state=CANCELED, claim_token=None, last_error="endpoint deleted")
            )
        return True


def _delivery(row: Row[tuple[object, ...]]) -> Delivery:
    return Delivery(
        notification_id=row.notification_id,
        claim_token=row.claim_token,
        channel=row.channel,
        user_id=row.user_id,
        event_id=row.event_id,
        event_type=row.event_type,
        subject=row.subject,
        body=row.body,
        attempts=row.attempts,
        email=row.email,
        endpoint_id=row.endpoint_id,
        url=row.url if row.secret_sealed is not None else None,
        secret_sealed=row.secret_sealed,
    )
