"""Storing consumed events: a batch of events in one transaction, set-based.

`EventRecorder.record(events)` inserts the event ids into processed_event
and, for the ids not seen before, the contacts and the notifications (email,
SMS, push and webhook deliveries) they lead to, all in one transaction of
five statements whatever the batch size: an event redelivered (relay
republish, rebalance, crash before the offset commit) finds its id and adds
nothing. The unique indexes on notification (one per event, channel and user;
one per event, WEBHOOK and endpoint) back this up.

Channels follow the recipients' preferences (notify_svc.preferences), read
for the whole batch in one statement; each notice is rendered once per
recipient in their locale (notify_svc.templates), with HTML only for email.

Content the database refuses (a DataError or IntegrityError, e.g. a user id
longer than the column) fails the whole batch; the consumer then records the
batch's events one transaction each to find the one to dead-letter.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import String, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notify_svc.notifications import Plan, event_type_matches
from notify_svc.preferences import DEFAULTS, ChannelChoice, Preferences, decode_event_channels
from notify_svc.tables import EMAIL, MAX_SUBJECT_LENGTH, PUSH, SMS, WEBHOOK
from notify_svc.templates import Templates

MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME_LENGTH = 100

_UUIDS = ARRAY(UUID(as_uuid=True))
_STRINGS = ARRAY(String())
_TEXTS = ARRAY(Text())

_FIRST_SEEN = text(
    "INSERT INTO processed_event (event_id, event_type) "
    "SELECT * FROM unnest(CAST(:event_ids AS uuid[]), CAST(:event_types AS varchar[])) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
).bindparams(bindparam("event_ids", type_=_UUIDS), bindparam("event_types", type_=_STRINGS))

# The last address in the batch wins, as it would one event at a time.
_SAVE_CONTACTS = text(
    "INSERT INTO user_contact (user_id, email, display_name, updated_at) "
    "SELECT c.user_id, c.email, c.display_name, now() "
    "FROM unnest(CAST(:user_ids AS varchar[]), CAST(:emails AS varchar[]), CAST(:names AS varchar[])) "
    "AS c(user_id, email, display_name) "
    "ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, display_name = excluded.display_name, "
    "updated_at = excluded.updated_at"
).bindparams(
    bindparam("user_ids", type_=_STRINGS), bindparam("emails", type_=_STRINGS), bindparam("names", type_=_STRINGS)
)

# FOR SHARE: a concurrent DeleteWebhookEndpoint or disable waits for this transaction, then
# cancels the deliveries it adds. Ordered, so two replicas lock in one order.
_ENDPOINTS = text(
    "SELECT endpoint_id, owner_id, event_types FROM webhook_endpoint "
    "WHERE owner_id = ANY(CAST(:owners AS varchar[])) AND deleted_at IS NULL AND disabled_at IS NULL "
    "AND event_types && CAST(:event_types AS varchar[]) "
    "ORDER BY endpoint_id FOR SHARE"
).bindparams(bindparam("owners", type_=_STRINGS), bindparam("event_types", type_=_STRINGS))

# Only whether a phone number or push subscription exists: the values stay in the database.
_PREFERENCES = text(
    "SELECT user_id, locale, default_email, default_sms, default_push, event_channels::text, "
    "phone_number IS NOT NULL, push_subscription_sealed IS NOT NULL "
    "FROM notification_preference WHERE user_id = ANY(CAST(:users AS varchar[]))"
).bindparams(bindparam("users", type_=_STRINGS))

# clock_timestamp(): rows keep the order of their events in create_time (newest first lists),
# where now() would give the whole batch one time.
_COLUMNS = ("notification_id", "user_id", "channel", "endpoint_id", "event_id", "event_type", "event_payload",
            "subject", "body", "body_html")  # fmt: skip
_ADD_NOTIFICATIONS = text(
    "INSERT INTO notification (notification_id, user_id, channel, endpoint_id, event_id, event_type, "
    "event_payload, subject, body, body_html, create_time) "
    "SELECT n.*, clock_timestamp() FROM unnest("
    "CAST(:notification_id AS uuid[]), CAST(:user_id AS varchar[]), CAST(:channel AS varchar[]), "
    "CAST(:endpoint_id AS uuid[]), CAST(:event_id AS uuid[]), CAST(:event_type AS varchar[]), "
    "CAST(:event_payload AS bytea[]), CAST(:subject AS varchar[]), CAST(:body AS text[]), "
    "CAST(:body_html AS text[])) AS n "
    "ON CONFLICT DO NOTHING"
).bindparams(
    bindparam("notification_id", type_=_UUIDS),
    bindparam("user_id", type_=_STRINGS),
    bindparam("channel", type_=_STRINGS),
    bindparam("endpoint_id", type_=_UUIDS),
    bindparam("event_id", type_=_UUIDS),
    bindparam("event_type", type_=_STRINGS),
    bindparam("event_payload", type_=ARRAY(BYTEA())),
    bindparam("subject", type_=_STRINGS),
    bindparam("body", type_=_TEXTS),
    bindparam("body_html", type_=_TEXTS),
)


@dataclass(frozen=True)
class IncomingEvent:
    """A decoded event as the consumer stores it."""

    event_id: uuid.UUID
    event_type: str
    payload: bytes  # the envelope as received (protobuf binary)
    # The envelope as JSON, the body merchants receive: rendered only for an event some endpoint wants.
    webhook_body: Callable[[], str]
    plan: Plan


class _Notifications:
    """The notification rows of a batch, column by column (the arrays unnest() takes)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[object]] = {name: [] for name in _COLUMNS}

    def add(self, event: IncomingEvent, user_id: str, channel: str, endpoint_id: uuid.UUID | None, subject: str,
            body: str, body_html: str | None = None) -> None:  # fmt: skip
        values = (uuid.uuid4(), user_id, channel, endpoint_id, event.event_id, event.event_type, event.payload,
                  subject[:MAX_SUBJECT_LENGTH], body, body_html)  # fmt: skip
        for name, value in zip(_COLUMNS, values, strict=True):
            self.columns[name].append(value)

    def __bool__(self) -> bool:
        return bool(self.columns["notification_id"])


class EventRecorder:
    """Stores consumed events' notifications once per event id."""

    def __init__(self, engine: AsyncEngine, templates: Templates) -> None:
        self._engine = engine
        self._templates = templates

    async def record(self, events: Sequence[IncomingEvent]) -> set[uuid.UUID]:
        """Stores the events not seen before, in one transaction; returns their ids.

        `events` must have distinct ids. Raises what the database raised; then nothing was stored.
        """
        if not events:
            return set()
        # Sorted ids: two replicas inserting overlapping batches lock the index entries in one order.
        ordered = sorted(events, key=lambda event: event.event_id)
        async with self._engine.begin() as conn:
            first_seen = set(
                (
                    await conn.execute(
                        _FIRST_SEEN,
                        {"event_ids": [e.event_id for e in ordered], "event_types": [e.event_type for e in ordered]},
                    )
                ).scalars()
            )
            new = [event for event in events if event.event_id in first_seen]
            if new:
                await self._save_contacts(conn, new)
                rows = _Notifications()
                await self._add_personal(conn, rows, new)
                await self._add_webhooks(conn, rows, new)
                if rows:
                    await conn.execute(_ADD_NOTIFICATIONS, rows.columns)
        return first_seen

    @staticmethod
    async def _save_contacts(conn: AsyncConnection, events: Sequence[IncomingEvent]) -> None:
        contacts = {e.plan.contact.user_id: e.plan.contact for e in events if e.plan.contact is not None}
        if not contacts:
            return
        await conn.execute(
            _SAVE_CONTACTS,
            {
                "user_ids": list(contacts),
                "emails": [c.email[:MAX_EMAIL_LENGTH] for c in contacts.values()],
                "names": [c.display_name[:MAX_DISPLAY_NAME_LENGTH] for c in contacts.values()],
            },
        )

    async def _add_personal(self, conn: AsyncConnection, rows: _Notifications, events: Sequence[IncomingEvent]) -> None:
        """Each notice on the channels its recipient chose, rendered in their locale."""
        recipients = sorted({notice.user_id for event in events for notice in event.plan.notices})
        if not recipients:
            return
        chosen = {row[0]: _preferences(row) for row in await conn.execute(_PREFERENCES, {"users": recipients})}
        for event in events:
            for notice in event.plan.notices:
                preferences = chosen.get(notice.user_id, DEFAULTS)
                channels = preferences.channels_for(event.event_type)
                if not channels:
                    continue
                message = self._templates.render(
                    notice.template, preferences.locale, notice.params, with_html=EMAIL in channels
                )
                for channel in channels:
                    if channel == EMAIL:
                        rows.add(event, notice.user_id, EMAIL, None, message.subject, message.text, message.html)
                    elif channel == SMS:
                        rows.add(event, notice.user_id, SMS, None, message.subject, message.sms)
                    elif channel == PUSH:
                        rows.add(event, notice.user_id, PUSH, None, message.subject, message.push_body)

    @staticmethod
    async def _add_webhooks(conn: AsyncConnection, rows: _Notifications, events: Sequence[IncomingEvent]) -> None:
        owners = sorted({party for event in events for party in event.plan.parties})
        if not owners:
            return
        event_types = sorted({event.event_type for event in events} | {"*"})
        found = (await conn.execute(_ENDPOINTS, {"owners": owners, "event_types": event_types})).all()
        by_owner: dict[str, list[tuple[uuid.UUID, list[str]]]] = defaultdict(list)
        for endpoint_id, owner_id, subscribed in found:
            by_owner[owner_id].append((endpoint_id, subscribed))
        for event in events:
            body: str | None = None
            for party in sorted(event.plan.parties):
                for endpoint_id, subscribed in by_owner.get(party, ()):
                    if event_type_matches(subscribed, event.event_type):
                        body = body if body is not None else event.webhook_body()
                        rows.add(event, party, WEBHOOK, endpoint_id, f"Webhook {event.event_type}", body)


def _preferences(row: Sequence[object]) -> Preferences:
    _, locale, email, sms, push, event_channels, has_phone, has_push = row
    return Preferences(
        locale=str(locale),
        default=ChannelChoice(bool(email), bool(sms), bool(push)),
        per_event_type=decode_event_channels(str(event_channels)),
        has_phone=bool(has_phone),
        has_push=bool(has_push),
    )
