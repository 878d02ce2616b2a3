"""Users' notification preferences, stored (one row per user who changed theirs; none means the defaults).

The phone number is kept as entered (E.164, checked by the database too); the
push subscription is sealed (AES-256-GCM, bound to the user id), since it
lets whoever holds it push to the user's device. Neither ever leaves through
the API except the phone number to its owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from notify_svc.preferences import EMAIL_ONLY, ChannelChoice, decode_event_channels
from notify_svc.tables import notification_preference


@dataclass(frozen=True)
class StoredPreferences:
    user_id: str
    locale: str = "en"
    default: ChannelChoice = EMAIL_ONLY
    per_event_type: Mapping[str, ChannelChoice] = field(default_factory=dict)
    phone_number: str | None = None
    push_registered: bool = False
    update_time: datetime | None = None  # None: never changed, the defaults


# Columns an update may set, with the value a new row starts from.
DEFAULT_COLUMNS: Mapping[str, object] = {
    "locale": "en",
    "default_email": True,
    "default_sms": False,
    "default_push": False,
    "event_channels": {},
    "phone_number": None,
    "push_subscription_sealed": None,
}


class PreferenceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, user_id: str) -> StoredPreferences:
        p = notification_preference
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(p).where(p.c.user_id == user_id))).one_or_none()
        return _stored(row) if row is not None else StoredPreferences(user_id)

    async def update(self, user_id: str, changes: Mapping[str, object]) -> StoredPreferences:
        """Sets the given columns (DEFAULT_COLUMNS' names), the others keeping their value or default; one
        statement, so concurrent updates of different fields both land."""
        unknown = set(changes) - set(DEFAULT_COLUMNS)
        if unknown:
            raise ValueError(f"not preference columns: {sorted(unknown)}")
        p = notification_preference
        row_values = {**DEFAULT_COLUMNS, **changes, "user_id": user_id}
        new_row = insert(p).values(**row_values)
        statement = new_row.on_conflict_do_update(
            index_elements=[p.c.user_id],
            set_={**{name: new_row.excluded[name] for name in changes}, "update_time": func.now()},
        ).returning(p)
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).one()
        return _stored(row)


def _stored(row: Row[tuple[object, ...]]) -> StoredPreferences:
    return StoredPreferences(
        user_id=row.user_id,
        locale=row.locale,
        default=ChannelChoice(row.default_email, row.default_sms, row.default_push),
        per_event_type=decode_event_channels(row.event_channels),
        phone_number=row.phone_number,
        push_registered=row.push_subscription_sealed is not None,
        update_time=row.update_time,
    )
