"""A round's webhook attempts, recorded: the attempt log, each endpoint's health, disabling and telling.

Runs inside the worker's transaction for the round (NotifyStore.record_outcomes):
endpoints are locked first (FOR UPDATE, in id order), then notifications,
the order DeleteWebhookEndpoint and DisableWebhookEndpoint lock in. An
endpoint whose attempts all failed for longer than the failure window, or
that answered 410 Gone, is disabled: its pending deliveries are canceled and
an email to its owner is queued (rendered by the caller, in the owner's
locale) as an event notify made itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, Integer, String, bindparam, func, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from notify_svc.delivery_records import Attempt, Outcome
from notify_svc.retry import endpoint_verdict
from notify_svc.tables import (
    EMAIL,
    MAX_ERROR_LENGTH,
    MAX_RESPONSE_BODY_LENGTH,
    MAX_SUBJECT_LENGTH,
    notification,
    processed_event,
)

_UUIDS = ARRAY(UUID(as_uuid=True))


@dataclass(frozen=True)
class DisabledEndpoint:
    """An endpoint a round of attempts disabled, for the email to its owner."""

    endpoint_id: uuid.UUID
    owner_id: str
    url: str
    reason: str  # FAILING or GONE
    failing_since: datetime | None


@dataclass(frozen=True)
class OwnerNotice:
    """The email telling an owner that an endpoint was disabled, rendered by the caller."""

    event_id: uuid.UUID
    event_type: str
    payload: bytes
    subject: str
    body: str
    body_html: str | None


# Renders the owner's email in the owner's locale (None: the default) for a disabled endpoint.
NoticeFor = Callable[[DisabledEndpoint, str | None], OwnerNotice]


# Every attempt made is logged, also one whose outcome came too late to apply: the request was sent.
LOG_ATTEMPTS = text(
    "INSERT INTO delivery_attempt (notification_id, attempt, start_time, latency_ms, status_code, response_body, "
    "error) SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[]), CAST(:starts AS timestamptz[]), "
    "CAST(:latencies AS int[]), CAST(:statuses AS int[]), CAST(:bodies AS varchar[]), CAST(:errors AS varchar[])) "
    "ON CONFLICT DO NOTHING"
).bindparams(
    bindparam("ids", type_=_UUIDS),
    bindparam("attempts", type_=ARRAY(Integer())),
    bindparam("starts", type_=ARRAY(DateTime(timezone=True))),
    bindparam("latencies", type_=ARRAY(Integer())),
    bindparam("statuses", type_=ARRAY(Integer())),
    bindparam("bodies", type_=ARRAY(String())),
    bindparam("errors", type_=ARRAY(String())),
)

# An endpoint's health after a round: a success clears failing_since; a failure starts it (if not yet);
# a 410 Gone, or failures for longer than the window, disable it. Healthy endpoints are not written.
_ENDPOINT_HEALTH = (
    text(
        "WITH h AS (SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:succeeded AS boolean[]), "
        "CAST(:gone AS boolean[])) AS h(endpoint_id, succeeded, gone)), "
        "verdict AS (SELECT e.endpoint_id, CASE WHEN h.gone THEN 'GONE' "
        "WHEN NOT h.succeeded AND e.failing_since <= now() - make_interval(secs => :window) THEN 'FAILING' END "
        "AS disable, CASE WHEN h.succeeded AND NOT h.gone THEN NULL ELSE COALESCE(e.failing_since, now()) END "
        "AS failing_since FROM webhook_endpoint AS e JOIN h ON h.endpoint_id = e.endpoint_id "
        "WHERE e.deleted_at IS NULL AND e.disabled_at IS NULL "
        "AND (NOT h.succeeded OR h.gone OR e.failing_since IS NOT NULL) "
        "ORDER BY e.endpoint_id FOR UPDATE OF e) "
        "UPDATE webhook_endpoint AS e SET failing_since = v.failing_since, "
        "disabled_at = CASE WHEN v.disable IS NOT NULL THEN now() END, disabled_reason = v.disable, "
        "update_time = CASE WHEN v.disable IS NOT NULL THEN now() ELSE e.update_time END "
        "FROM verdict AS v WHERE e.endpoint_id = v.endpoint_id "
        "RETURNING e.endpoint_id, e.owner_id, e.url, e.disabled_reason, e.failing_since"
    )
    .bindparams(
        bindparam("ids", type_=_UUIDS),
        bindparam("succeeded", type_=ARRAY(Boolean())),
        bindparam("gone", type_=ARRAY(Boolean())),
        bindparam("window", type_=Float()),
    )
    .columns(endpoint_id=UUID(as_uuid=True))
)

# Deliveries of an endpoint that was just disabled or deleted stop; a send in flight completes and its
# outcome is discarded (the row is no longer PENDING).
CANCEL_PENDING = text(
    "UPDATE notification SET state = 'CANCELED', claim_token = NULL, lease_expires_at = NULL, last_error = :why "
    "WHERE endpoint_id = ANY(CAST(:ids AS uuid[])) AND state = 'PENDING'"
).bindparams(bindparam("ids", type_=_UUIDS), bindparam("why", type_=String()))

_LOCALES = text(
    "SELECT user_id, locale FROM notification_preference WHERE user_id = ANY(CAST(:users AS varchar[]))"
).bindparams(bindparam("users", type_=ARRAY(String())))


async def judge_endpoints(
    conn: AsyncConnection, attempted: Sequence[Outcome], disable_after_seconds: float
) -> list[DisabledEndpoint]:
    by_endpoint: dict[uuid.UUID, list[Attempt]] = {}
    for outcome in attempted:
        assert outcome.attempt is not None
        assert outcome.delivery.endpoint_id is not None
        by_endpoint.setdefault(outcome.delivery.endpoint_id, []).append(outcome.attempt)
    ids = sorted(by_endpoint)
    verdicts = [endpoint_verdict([(a.status_code, a.accepted) for a in by_endpoint[i]]) for i in ids]
    judged = await conn.execute(
        _ENDPOINT_HEALTH,
        {
            "ids": ids,
            "succeeded": [verdict.succeeded for verdict in verdicts],
            "gone": [verdict.gone for verdict in verdicts],
            "window": disable_after_seconds,
        },
    )
    return [
        DisabledEndpoint(row.endpoint_id, row.owner_id, row.url, row.disabled_reason, row.failing_since)
        for row in judged
        if row.disabled_reason is not None
    ]


async def stop_and_tell(conn: AsyncConnection, disabled: Sequence[DisabledEndpoint], notice_for: NoticeFor) -> None:
    """Cancels the disabled endpoints' pending deliveries and queues an email to each owner."""
    await conn.execute(CANCEL_PENDING, {"ids": [d.endpoint_id for d in disabled], "why": "endpoint disabled"})
    owners = sorted({d.owner_id for d in disabled})
    locales: Mapping[str, str] = dict((await conn.execute(_LOCALES, {"users": owners})).tuples().all())
    for endpoint in disabled:
        notice = notice_for(endpoint, locales.get(endpoint.owner_id))
        await add_own_event(conn, notice.event_id, notice.event_type)
        await conn.execute(
            notification.insert().values(
                notification_id=uuid.uuid4(),
                user_id=endpoint.owner_id,
                channel=EMAIL,
                event_id=notice.event_id,
                event_type=notice.event_type,
                event_payload=notice.payload,
                subject=notice.subject[:MAX_SUBJECT_LENGTH],
                body=notice.body,
                body_html=notice.body_html,
                create_time=func.clock_timestamp(),
            )
        )


async def add_own_event(conn: AsyncConnection, event_id: uuid.UUID, event_type: str) -> None:
    """Records an event notify made itself (a test event, an endpoint-disabled notice) like a consumed one."""
    await conn.execute(processed_event.insert().values(event_id=event_id, event_type=event_type))


def attempt_rows(attempted: Sequence[Outcome]) -> dict[str, list[object]]:
    rows: dict[str, list[object]] = {key: [] for key in ("ids", "attempts", "starts", "latencies", "statuses")}
    rows |= {"bodies": [], "errors": []}
    for outcome in attempted:
        attempt = outcome.attempt
        assert attempt is not None
        rows["ids"].append(outcome.delivery.notification_id)
        rows["attempts"].append(outcome.delivery.attempts)
        rows["starts"].append(attempt.start_time)
        rows["latencies"].append(attempt.latency_ms)
        rows["statuses"].append(attempt.status_code)
        body = attempt.response_body
        rows["bodies"].append(body[:MAX_RESPONSE_BODY_LENGTH] if body is not None else None)
        rows["errors"].append(attempt.error[:MAX_ERROR_LENGTH] if attempt.error is not None else None)
    return rows
