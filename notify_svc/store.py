"""notify_svc tables and queries (SQLAlchemy Core).

The invariants live in the schema (migrations/versions/0002): one processed
row per event id, one notification per (event, EMAIL, user) and per (event,
WEBHOOK, endpoint), states and channels by CHECK. Deliveries are claimed with
FOR UPDATE SKIP LOCKED and a lease, and every later update is conditional on
the claim, so replicas never work one delivery at the same time. The
consumer's writes are in notify_svc.ingest.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    Float,
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
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import Tuple

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


@dataclass(frozen=True)
class Outcome:
    """How one claimed delivery's attempt ended."""

    delivery: Delivery
    state: str  # DELIVERED, DEAD_LETTERED, CANCELED, or PENDING to retry
    error: str | None = None  # why it failed (or was canceled)
    retry_in_seconds: float | None = None  # PENDING: when to try again


# One statement: SKIP LOCKED takes due rows no other worker holds, the update
# counts the attempt and sets the lease, and the claimed rows come back with
# what a send needs (the recipient's address, the endpoint's URL and secret).
_CLAIM_DUE = (
    text(
        "WITH due AS (SELECT notification_id FROM notification WHERE state = 'PENDING' AND next_attempt_at <= now() "
        "ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED), "
        "claimed AS (UPDATE notification AS n SET attempts = n.attempts + 1, claim_token = :token, "
        "next_attempt_at = now() + make_interval(secs => :lease) FROM due "
        "WHERE n.notification_id = due.notification_id "
        "RETURNING n.notification_id, n.claim_token, n.channel, n.user_id, n.event_id, n.event_type, n.subject, "
        "n.body, n.attempts, n.endpoint_id) "
        "SELECT c.*, u.email, e.url, e.secret_sealed FROM claimed AS c "
        "LEFT JOIN user_contact AS u ON u.user_id = c.user_id "
        "LEFT JOIN webhook_endpoint AS e ON e.endpoint_id = c.endpoint_id"
    )
    .bindparams(
        bindparam("limit", type_=Integer()),
        bindparam("token", type_=UUID(as_uuid=True)),
        bindparam("lease", type_=Float()),
    )
    .columns(
        notification_id=UUID(as_uuid=True),
        claim_token=UUID(as_uuid=True),
        event_id=UUID(as_uuid=True),
        endpoint_id=UUID(as_uuid=True),
    )
)

# The claim must still hold: a delivery canceled meanwhile, or one whose lease
# lapsed and that another worker claimed again, keeps what happened to it.
_RECORD_OUTCOMES = (
    text(
        "UPDATE notification AS n SET state = o.state, claim_token = NULL, last_error = o.last_error, "
        "delivered_time = CASE WHEN o.state = 'DELIVERED' THEN now() END, "
        "next_attempt_at = CASE WHEN o.delay IS NULL THEN n.next_attempt_at "
        "ELSE now() + make_interval(secs => o.delay) END "
        "FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[]), CAST(:states AS varchar[]), "
        "CAST(:errors AS varchar[]), CAST(:delays AS float8[])) "
        "AS o(notification_id, claim_token, state, last_error, delay) "
        "WHERE n.notification_id = o.notification_id AND n.claim_token = o.claim_token AND n.state = 'PENDING' "
        "RETURNING n.notification_id"
    )
    .columns(notification_id=UUID(as_uuid=True))
    .bindparams(
        bindparam("ids", type_=ARRAY(UUID(as_uuid=True))),
        bindparam("tokens", type_=ARRAY(UUID(as_uuid=True))),
        bindparam("states", type_=ARRAY(String())),
        bindparam("errors", type_=ARRAY(String())),
        bindparam("delays", type_=ARRAY(Float())),
    )
)


class NotifyStore:
    """Every write is one transaction; methods name what they guarantee."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # For the worker's single-statement writes: no BEGIN and COMMIT round trips around them.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # --- the delivery worker ---------------------------------------------------

    async def claim_due(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Reserves up to `limit` due deliveries for this worker for `lease_seconds`.

        SKIP LOCKED lets replicas claim disjoint rows without waiting; the
        lease (next_attempt_at in the future) keeps the rows away from other
        workers after this short transaction commits, and counts the attempt
        before it is made, so a worker that dies mid-send still used one.
        """
        async with self._autocommit.connect() as conn:
            claim = {"limit": limit, "token": uuid.uuid4(), "lease": lease_seconds}
            rows = (await conn.execute(_CLAIM_DUE, claim)).all()
        return [_delivery(row) for row in rows]

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
        """Applies a round's attempt outcomes in one statement, each only if its claim still holds.

        Returns the notification ids whose outcome was applied; the others were
        canceled meanwhile or their lease lapsed and another worker took them.
        """
        if not outcomes:
            return set()
        ordered = sorted(outcomes, key=lambda outcome: outcome.delivery.notification_id)  # one lock order
        async with self._autocommit.connect() as conn:
            applied = await conn.execute(
                _RECORD_OUTCOMES,
                {
                    "ids": [o.delivery.notification_id for o in ordered],
                    "tokens": [o.delivery.claim_token for o in ordered],
                    "states": [o.state for o in ordered],
                    "errors": [o.error[:MAX_ERROR_LENGTH] if o.error is not None else None for o in ordered],
                    "delays": [o.retry_in_seconds for o in ordered],
                },
            )
            return set(applied.scalars())

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
