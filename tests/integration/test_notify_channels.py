"""Channels and preferences: SMS through Twilio's library to the stack's fake Twilio API, Web Push (encrypted,
VAPID-signed) to its fake push service, templates in the user's locale, and preferences only their owner sees."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import http_ece
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.field_mask_pb2 import FieldMask

from devstack.providers import SMS_SENDER, twilio_credentials, vapid_private_key
from devstack.stack import Stack
from paymesh.notify.v1 import notify_pb2
from paymesh.payment.v1 import payment_pb2
from tests.integration.notify_support import (
    RunningNotify,
    as_user,
    error_reason,
    eventually,
    migrate,
    new_user,
    notifications_of,
    payment_event,
    produce_events,
    running_notify,
    settings_for,
)

pytestmark = pytest.mark.integration
Channel = notify_pb2.Notification
SMS_ONLY = notify_pb2.ChannelSelection(email=False, sms=True, push=False)


@pytest.fixture(scope="module")
def providers(infra: Stack) -> str:
    infra.up(["providers"])
    return infra.component("providers").address()


@pytest.fixture(scope="module")
async def notify(infra: Stack, providers: str) -> AsyncIterator[RunningNotify]:
    await migrate(infra)
    account_sid, auth_token = twilio_credentials(infra.secrets)
    settings = settings_for(
        infra,
        sms_provider="twilio",
        twilio_api_base_url=providers,
        twilio_account_sid=account_sid,
        twilio_auth_token=auth_token,
        sms_sender=SMS_SENDER,
        push_provider="webpush",
        push_vapid_private_key=vapid_private_key(infra.secrets),
    )
    async with running_notify(settings) as running:
        yield running


def _phone() -> str:
    return "+1415" + str(int.from_bytes(os.urandom(4), "big") % 10_000_000).zfill(7)


def _inbox(providers: str) -> dict[str, list[dict[str, Any]]]:
    reply = httpx.get(f"{providers}/messages", timeout=10)
    reply.raise_for_status()
    data: dict[str, list[dict[str, Any]]] = reply.json()
    return data


async def _update(notify: RunningNotify, user: str, paths: list[str] | None = None, **fields: Any) -> Any:
    request = notify_pb2.UpdateNotificationPreferencesRequest(
        notification_preferences=notify_pb2.NotificationPreferences(**fields),
        update_mask=FieldMask(paths=paths or []),
    )
    return await notify.stub.UpdateNotificationPreferences(request, metadata=as_user(user))


async def _on_channels(notify: RunningNotify, user: str, event_id: str) -> list[tuple[int, int]]:
    return sorted((n.channel, n.state) for n in await notifications_of(notify, user) if n.event_id == event_id)


async def test_sms_on_and_email_off_for_a_payment_sends_exactly_one_sms_per_payment_and_no_email(
    infra: Stack, notify: RunningNotify, providers: str
) -> None:
    payer, phone = new_user(), _phone()
    chosen = [notify_pb2.EventTypeChannels(event_type="payment.succeeded", channels=SMS_ONLY)]
    saved = await _update(notify, payer, phone_number=phone, event_type_channels=chosen)
    assert (saved.phone_number, list(saved.event_type_channels)) == (phone, chosen)
    first, second = payment_event(payer, new_user()), payment_event(payer, new_user(), amount=2500)
    failed = payment_event(payer, new_user(), state=payment_pb2.Payment.FAILED)
    await produce_events(infra, first, second, failed)

    async def two_texts() -> list[dict[str, Any]]:
        texts = [m for m in _inbox(providers)["sms"] if m["to"] == phone]
        return texts if len(texts) >= 2 else []

    texts = await eventually(two_texts)
    await asyncio.sleep(1.0)  # nothing more comes
    texts = [m for m in _inbox(providers)["sms"] if m["to"] == phone]
    assert sorted(m["body"] for m in texts) == ["You paid 10.50 USD", "You paid 25.00 USD"]
    assert {m["from"] for m in texts} == {SMS_SENDER}
    for event in (first, second):
        assert await _on_channels(notify, payer, event.id) == [(Channel.SMS, Channel.DELIVERED)]
    # Other event types keep the default: email, no SMS.
    assert [c for c, _ in await _on_channels(notify, payer, failed.id)] == [Channel.EMAIL]


async def test_a_number_the_provider_refuses_cancels_the_sms_rather_than_retrying(
    infra: Stack, notify: RunningNotify
) -> None:
    user = new_user()
    everything_by_sms = notify_pb2.ChannelSelection(sms=True)
    await _update(notify, user, phone_number="+15005550001", default_channels=everything_by_sms)
    event = payment_event(user, new_user())
    await produce_events(infra, event)

    async def canceled() -> bool:
        return await _on_channels(notify, user, event.id) == [(Channel.SMS, Channel.CANCELED)]

    await eventually(canceled)


async def test_sms_chosen_without_a_phone_number_sends_nothing_on_that_channel(
    infra: Stack, notify: RunningNotify
) -> None:
    user = new_user()
    await _update(notify, user, default_channels=notify_pb2.ChannelSelection(email=True, sms=True))
    event = payment_event(user, new_user())
    await produce_events(infra, event)

    async def emailed() -> list[int]:
        return [channel for channel, _ in await _on_channels(notify, user, event.id)]

    assert await eventually(emailed) == [Channel.EMAIL]


def _browser() -> tuple[ec.EllipticCurvePrivateKey, str, bytes, str]:
    """A browser's push keys: its private key, p256dh (base64url) and auth secret (raw and base64url)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    auth = os.urandom(16)
    encode = base64.urlsafe_b64encode
    return key, encode(public).decode().rstrip("="), auth, encode(auth).decode().rstrip("=")


async def test_a_push_notification_is_encrypted_for_the_browser_and_vapid_signed(
    infra: Stack, notify: RunningNotify, providers: str
) -> None:
    user, subscription = new_user(), f"sub-{uuid.uuid4().hex}"
    key, p256dh, auth, auth_text = _browser()
    push = notify_pb2.PushSubscription(endpoint=f"{providers}/push/{subscription}", p256dh=p256dh, auth=auth_text)
    saved = await _update(
        notify, user, push_subscription=push, default_channels=notify_pb2.ChannelSelection(push=True), locale="de"
    )
    assert saved.push_registered
    assert not saved.HasField("push_subscription")  # never shown, not even to its owner
    event = payment_event(new_user(), user)
    await produce_events(infra, event)

    async def pushed() -> list[dict[str, Any]]:
        return [m for m in _inbox(providers)["push"] if m["subscription"] == subscription]

    (message,) = await eventually(pushed)
    assert message["authorization"].startswith("vapid t=")  # the fake checked its signature and audience
    plain = http_ece.decrypt(base64.b64decode(message["body"]), private_key=key, auth_secret=auth, version="aes128gcm")
    shown = json.loads(plain)
    assert shown["title"] == "Sie haben 10.50 USD erhalten"
    assert shown["body"].startswith(f"Zahlung {event.payment_changed.payment.payment_id}")
    (notice,) = [n for n in await notifications_of(notify, user) if n.event_id == event.id]
    assert (notice.channel, notice.notification_id) == (Channel.PUSH, shown["tag"])


async def test_an_expired_push_subscription_cancels_the_push(
    infra: Stack, notify: RunningNotify, providers: str
) -> None:
    user = new_user()
    _, p256dh, _, auth_text = _browser()
    push = notify_pb2.PushSubscription(
        endpoint=f"{providers}/push/gone-{uuid.uuid4().hex}", p256dh=p256dh, auth=auth_text
    )
    await _update(notify, user, push_subscription=push, default_channels=notify_pb2.ChannelSelection(push=True))
    event = payment_event(new_user(), user)
    await produce_events(infra, event)

    async def canceled() -> bool:
        return await _on_channels(notify, user, event.id) == [(Channel.PUSH, Channel.CANCELED)]

    await eventually(canceled)


async def test_preferences_are_their_owners_alone_and_default_to_email(notify: RunningNotify) -> None:
    owner, other = new_user(), new_user()
    defaults = await notify.stub.GetNotificationPreferences(
        notify_pb2.GetNotificationPreferencesRequest(), metadata=as_user(owner)
    )
    assert (defaults.user_id, defaults.locale, defaults.phone_number) == (owner, "en", "")
    assert defaults.default_channels == notify_pb2.ChannelSelection(email=True)
    assert not defaults.HasField("update_time")
    await _update(notify, owner, phone_number="+14155550100")
    for reader, role in ((other, "CUSTOMER"), (new_user(), "ADMIN")):
        theirs = await notify.stub.GetNotificationPreferences(
            notify_pb2.GetNotificationPreferencesRequest(), metadata=as_user(reader, role)
        )
        assert (theirs.user_id, theirs.phone_number) == (reader, "")
    # A masked update changes only what it names; an empty phone number removes it.
    kept = await _update(notify, owner, ["locale"], locale="de", phone_number="+19999999999")
    assert (kept.locale, kept.phone_number) == ("de", "+14155550100")
    removed = await _update(notify, owner, ["phone_number"])
    assert removed.phone_number == ""


@pytest.mark.parametrize(
    "fields",
    [
        {"phone_number": "0151 234"},
        {"locale": "fr"},
        {"event_type_channels": [notify_pb2.EventTypeChannels(event_type="Payment!", channels=SMS_ONLY)]},
        {"push_subscription": notify_pb2.PushSubscription(endpoint="http://127.0.0.1:9/p", p256dh="x", auth="y")},
        {},
    ],
)
async def test_bad_preferences_are_refused_and_change_nothing(notify: RunningNotify, fields: dict[str, Any]) -> None:
    user = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _update(notify, user, **fields)
    assert (caught.value.code(), error_reason(caught.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    unchanged = await notify.stub.GetNotificationPreferences(
        notify_pb2.GetNotificationPreferencesRequest(), metadata=as_user(user)
    )
    assert not unchanged.HasField("update_time")
