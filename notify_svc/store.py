"""The delivery worker's queries and the notification list (SQLAlchemy Core over notify_svc.tables).

Deliveries are claimed with FOR UPDATE SKIP LOCKED and a lease, and every
later update is conditional on the claim, so replicas never work one delivery
at the same time. A round's outcomes are recorded in one statement; a round
with webhook attempts also logs them and updates its endpoints' health in the
same transaction (disabling an endpoint that failed too long or answered 410,
cancelling its pending deliveries and queuing an email to its owner). The
consumer's writes are in notify_svc.ingest, the API's in
notify_svc.endpoint_store and notify_svc.preference_store.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
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

from notify_svc.delivery_records import Attempt, DeadLetter, Delivery, Outcome
from notify_svc.endpoint_health import (
    LOG_ATTEMPTS,
    DisabledEndpoint,
    NoticeFor,
    attempt_rows,
    judge_endpoints,
    stop_and_tell,
)
from notify_svc.tables import (
    CANCELED,
    DEAD_LETTERED,
    DELIVERED,
    EMAIL,
    MAX_ERROR_LENGTH,
    MAX_SUBJECT_LENGTH,
    PENDING,
    PUSH,
    SMS,
    WEBHOOK,
    notification,
    processed_event,
    user_contact,
    webhook_endpoint,
)

__all__ = [
    "CANCELED",
    "DEAD_LETTERED",
    "DELIVERED",
    "EMAIL",
    "MAX_SUBJECT_LENGTH",
    "PENDING",
    "PUSH",
    "SMS",
    "WEBHOOK",
    "Attempt",
    "DeadLetter",
    "Delivery",
    "DisabledEndpoint",
    "NotificationRecord",
    "NotifyStore",
    "Outcome",
    "notification",
    "processed_event",
    "user_contact",
    "webhook_endpoint",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UUIDS = ARRAY(UUID(as_uuid=True))


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


def cursor_tuple(after: tuple[datetime, uuid.UUID]) -> Tuple:
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


# One statement: SKIP LOCKED takes due rows no other worker holds, the update
# counts the attempt and sets the lease, and the claimed rows come back with
# what a send needs: the recipient's address (email from user_contact, phone
# or push subscription from notification_preference), the endpoint's URL and
# secrets (the previous one only while its overlap lasts; no URL for a
# deleted or disabled endpoint) and where the delivery is in its schedule.
_CLAIM_DUE = (
    text(
        "WITH due AS (SELECT notification_id FROM notification WHERE state = 'PENDING' AND next_attempt_at <= now() "
        "AND (lease_expires_at IS NULL OR lease_expires_at <= now()) "
        "ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED), "
        "claimed AS (UPDATE notification AS n SET attempts = n.attempts + 1, claim_token = :token, "
        "lease_expires_at = now() + make_interval(secs => :lease) FROM due "
        "WHERE n.notification_id = due.notification_id "
        "RETURNING n.notification_id, n.claim_token, n.channel, n.user_id, n.event_id, n.event_type, n.subject, "
        "n.body, n.body_html, n.attempts, n.endpoint_id, n.attempts - n.schedule_offset AS schedule_attempt, "
        "extract(epoch FROM now() - COALESCE(n.schedule_start, n.create_time))::float8 AS schedule_age) "
        "SELECT c.*, u.email, "
        "CASE WHEN e.disabled_at IS NULL THEN e.url END AS url, e.secret_sealed, "
        "CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_sealed END AS previous_secret_sealed, "
        "p.phone_number, p.push_subscription_sealed FROM claimed AS c "
        "LEFT JOIN user_contact AS u ON u.user_id = c.user_id AND c.channel = 'EMAIL' "
        "LEFT JOIN webhook_endpoint AS e ON e.endpoint_id = c.endpoint_id "
        "LEFT JOIN notification_preference AS p ON p.user_id = c.user_id AND c.channel IN ('SMS', 'PUSH')"
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
        "UPDATE notification AS n SET state = o.state, claim_token = NULL, lease_expires_at = NULL, "
        "last_error = o.last_error, "
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
        bindparam("ids", type_=_UUIDS),
        bindparam("tokens", type_=_UUIDS),
        bindparam("states", type_=ARRAY(String())),
        bindparam("errors", type_=ARRAY(String())),
        bindparam("delays", type_=ARRAY(Float())),
    )
)

_REARM = text(
    "UPDATE notification SET state = 'PENDING', next_attempt_at = now(), claim_token = NULL, lease_expires_at = NULL, "
    "last_error = NULL, dlq_published_at = NULL, schedule_start = now(), schedule_offset = attempts "
    "WHERE notification_id = :id AND state = 'DEAD_LETTERED' RETURNING notification_id"
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_ERASE_EXPIRED_SECRETS = text(
    "UPDATE webhook_endpoint SET previous_secret_sealed = NULL, previous_secret_expires_at = NULL "
    "WHERE previous_secret_expires_at <= now()"
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
        lease (lease_expires_at in the future) keeps the rows away from other
        workers after this short transaction commits, and counts the attempt
        before it is made, so a worker that dies mid-send still used one. The
        claim changes no indexed column, so it is a HOT update (migration 0005).
        """
        async with self._autocommit.connect() as conn:
            claim = {"limit": limit, "token": uuid.uuid4(), "lease": lease_seconds}
            rows = (await conn.execute(_CLAIM_DUE, claim)).all()
        return [_delivery(row) for row in rows]

    async def record_outcomes(
        self, outcomes: Sequence[Outcome], disable_after_seconds: float, notice_for: NoticeFor
    ) -> tuple[set[uuid.UUID], list[DisabledEndpoint]]:
        """Applies a round's attempt outcomes, each only if its claim still holds; with webhook attempts, also
        logs them and judges their endpoints (in one transaction).

        Returns the notification ids whose outcome was applied (the others were
        canceled meanwhile, or their lease lapsed and another worker took them)
        and the endpoints this round disabled.
        """
        if not outcomes:
            return set(), []
        ordered = sorted(outcomes, key=lambda outcome: outcome.delivery.notification_id)  # one lock order
        values = {
            "ids": [o.delivery.notification_id for o in ordered],
            "tokens": [o.delivery.claim_token for o in ordered],
            "states": [o.state for o in ordered],
            "errors": [o.error[:MAX_ERROR_LENGTH] if o.error is not None else None for o in ordered],
            "delays": [o.retry_in_seconds for o in ordered],
        }
        attempted = [o for o in ordered if o.attempt is not None]
        if not attempted:
            async with self._autocommit.connect() as conn:
                return set((await conn.execute(_RECORD_OUTCOMES, values)).scalars()), []
        async with self._engine.begin() as conn:
            # Endpoints first, then notifications: the order DeleteWebhookEndpoint and disabling lock in.
            disabled = await judge_endpoints(conn, attempted, disable_after_seconds)
            applied = set((await conn.execute(_RECORD_OUTCOMES, values)).scalars())
            await conn.execute(LOG_ATTEMPTS, attempt_rows(attempted))
            if disabled:
                await stop_and_tell(conn, disabled, notice_for)
        return applied, disabled

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

    async def rearm_dead_letter(self, notification_id: uuid.UUID) -> bool:
        """Makes a DEAD_LETTERED delivery PENDING again with a new retry schedule (the DLQ re-drive); False if
        it is not dead-lettered (any more)."""
        async with self._autocommit.connect() as conn:
            return await conn.scalar(_REARM, {"id": notification_id}) is not None

    async def erase_expired_secrets(self) -> None:
        """Forgets previous signing secrets whose rotation overlap has ended."""
        async with self._autocommit.connect() as conn:
            await conn.execute(_ERASE_EXPIRED_SECRETS)

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
            query = query.where(tuple_(n.c.create_time, n.c.notification_id) < cursor_tuple(after))
        query = query.order_by(n.c.create_time.desc(), n.c.notification_id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [_notification(row) for row in (await conn.execute(query)).all()]


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
        body_html=row.body_html,
        attempts=row.attempts,
        email=row.email,
        endpoint_id=row.endpoint_id,
        url=row.url if row.secret_sealed is not None else None,
        secret_sealed=row.secret_sealed,
        previous_secret_sealed=row.previous_secret_sealed,
        phone_number=row.phone_number,
        push_subscription_sealed=row.push_subscription_sealed,
        schedule_attempt=row.schedule_attempt,
        schedule_age_seconds=row.schedule_age,
    )
