"""Users' notification preferences, the pure part: which channels carry which event type, and validation.

Default: EMAIL for every event type, SMS and PUSH off. A user may change the
default channels and choose channels per event type; SMS needs a phone
number (E.164) and PUSH a Web Push subscription, registered by the user
alone. The consumer asks `channels_for(event_type)` for every notice, with
the preferences of a whole batch's recipients read in one query.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from notify_svc.webhooks import is_event_type, validate_url
from paymesh_runtime.errors import validation_failed

EMAIL = "EMAIL"
SMS = "SMS"
PUSH = "PUSH"
CHANNELS = (EMAIL, SMS, PUSH)
MAX_EVENT_TYPE_CHANNELS = 50
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass(frozen=True)
class ChannelChoice:
    email: bool = True
    sms: bool = False
    push: bool = False

    def names(self) -> list[str]:
        return [name for name, on in ((EMAIL, self.email), (SMS, self.sms), (PUSH, self.push)) if on]

    @classmethod
    def of(cls, names: Sequence[str]) -> ChannelChoice:
        return cls(EMAIL in names, SMS in names, PUSH in names)


EMAIL_ONLY = ChannelChoice()


@dataclass(frozen=True)
class Preferences:
    """One user's preferences as the consumer needs them (the phone number and subscription stay in the
    database: only whether there is one)."""

    locale: str = "en"
    default: ChannelChoice = EMAIL_ONLY
    per_event_type: Mapping[str, ChannelChoice] = field(default_factory=dict)
    has_phone: bool = False
    has_push: bool = False

    def channels_for(self, event_type: str) -> tuple[str, ...]:
        """The channels a notice about `event_type` goes on (SMS and PUSH only where there is an address)."""
        choice = self.per_event_type.get(event_type, self.default)
        channels = [EMAIL] if choice.email else []
        if choice.sms and self.has_phone:
            channels.append(SMS)
        if choice.push and self.has_push:
            channels.append(PUSH)
        return tuple(channels)


DEFAULTS = Preferences()


def encode_event_channels(per_event_type: Mapping[str, ChannelChoice]) -> dict[str, list[str]]:
    """The per-event-type choices as stored (jsonb): {"payment.succeeded": ["SMS"], ...}."""
    return {event_type: choice.names() for event_type, choice in sorted(per_event_type.items())}


def decode_event_channels(stored: str | Mapping[str, Sequence[str]]) -> dict[str, ChannelChoice]:
    data = json.loads(stored) if isinstance(stored, str) else stored
    return {event_type: ChannelChoice.of(names) for event_type, names in data.items()}


# --- validation of what a user sends -------------------------------------------------------


def validate_locale(locale: str, known: frozenset[str]) -> str:
    if locale not in known:
        raise validation_failed("locale", f"must be one of {', '.join(sorted(known))}")
    return locale


def validate_phone_number(number: str) -> str | None:
    """An E.164 number, None for "" (remove it), or VALIDATION_FAILED."""
    if not number:
        return None
    if not _E164.match(number):
        raise validation_failed("phone_number", 'must be in E.164 form, e.g. "+14155550100"')
    return number


def validate_event_type_channels(entries: Sequence[tuple[str, ChannelChoice]]) -> dict[str, ChannelChoice]:
    if len(entries) > MAX_EVENT_TYPE_CHANNELS:
        raise validation_failed("event_type_channels", f"at most {MAX_EVENT_TYPE_CHANNELS} event types")
    chosen: dict[str, ChannelChoice] = {}
    for event_type, choice in entries:
        if not is_event_type(event_type):
            raise validation_failed(
                "event_type_channels", f'{event_type!r} is not an event type like "payment.succeeded"'
            )
        if event_type in chosen:
            raise validation_failed("event_type_channels", f"{event_type!r} is listed twice")
        chosen[event_type] = choice
    return chosen


@dataclass(frozen=True)
class PushSubscriptionInput:
    endpoint: str
    p256dh: str
    auth: str


def validate_push_subscription(subscription: PushSubscriptionInput, allow_private_hosts: bool) -> bool:
    """True: register it; False: remove the registered one (an empty endpoint); VALIDATION_FAILED otherwise."""
    if not subscription.endpoint:
        return False
    validate_url(subscription.endpoint, allow_private_hosts, field="push_subscription.endpoint")
    public_key = _base64url(subscription.p256dh, "push_subscription.p256dh")
    if len(public_key) != 65 or public_key[0] != 4:
        raise validation_failed("push_subscription.p256dh", "must be an uncompressed P-256 public key (65 bytes)")
    if len(_base64url(subscription.auth, "push_subscription.auth")) != 16:
        raise validation_failed("push_subscription.auth", "must be 16 bytes")
    return True


def _base64url(text: str, field_name: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise validation_failed(field_name, "must be base64url") from None
