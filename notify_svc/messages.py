"""Stored records → NotifyService's protobuf messages (the API's one place for these conversions)."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.duration_pb2 import Duration

from notify_svc.endpoint_store import DeliveryRecord, EndpointRecord
from notify_svc.preference_store import StoredPreferences
from notify_svc.store import PENDING, NotificationRecord
from paymesh.notify.v1 import notify_pb2
from paymesh_runtime.wire import timestamp

_Endpoint = notify_pb2.WebhookEndpoint


def notification_message(row: NotificationRecord) -> notify_pb2.Notification:
    return notify_pb2.Notification(
        notification_id=str(row.notification_id),
        user_id=row.user_id,
        channel=row.channel,  # the enum value's name
        event_id=str(row.event_id),
        event_type=row.event_type,
        subject=row.subject,
        body=row.body,
        state=row.state,
        attempts=row.attempts,
        create_time=timestamp(row.create_time),
        delivered_time=timestamp(row.delivered_time),
    )


def endpoint_message(row: EndpointRecord) -> notify_pb2.WebhookEndpoint:
    return notify_pb2.WebhookEndpoint(
        endpoint_id=str(row.endpoint_id),
        owner_id=row.owner_id,
        url=row.url,
        event_types=list(row.event_types),
        create_time=timestamp(row.create_time),
        description=row.description,
        state=_Endpoint.DISABLED if row.disabled_at is not None else _Endpoint.ENABLED,
        disabled_reason=row.disabled_reason or "DISABLED_REASON_UNSPECIFIED",
        disable_time=timestamp(row.disabled_at),
        update_time=timestamp(row.update_time),
        previous_secret_expire_time=timestamp(row.previous_secret_expires_at),
        failing_since=timestamp(row.failing_since),
    )


def delivery_message(row: DeliveryRecord) -> notify_pb2.WebhookDelivery:
    return notify_pb2.WebhookDelivery(
        delivery_id=str(row.delivery_id),
        endpoint_id=str(row.endpoint_id),
        event_id=str(row.event_id),
        event_type=row.event_type,
        state=row.state,
        attempt_count=row.attempts,
        attempts=[
            notify_pb2.DeliveryAttempt(
                attempt=entry.attempt,
                start_time=timestamp(entry.start_time),
                status_code=entry.status_code or 0,
                latency=_duration(entry.latency_ms),
                response_body=entry.response_body or "",
                error=entry.error or "",
            )
            for entry in row.attempt_log
        ],
        create_time=timestamp(row.create_time),
        delivered_time=timestamp(row.delivered_time),
        next_attempt_time=timestamp(row.next_attempt_at) if row.state == PENDING else None,
        last_error=row.last_error or "",
    )


def preferences_message(stored: StoredPreferences) -> notify_pb2.NotificationPreferences:
    return notify_pb2.NotificationPreferences(
        user_id=stored.user_id,
        locale=stored.locale,
        default_channels=_channels(stored.default.email, stored.default.sms, stored.default.push),
        event_type_channels=[
            notify_pb2.EventTypeChannels(event_type=event_type, channels=_channels(c.email, c.sms, c.push))
            for event_type, c in sorted(stored.per_event_type.items())
        ],
        phone_number=stored.phone_number or "",
        push_registered=stored.push_registered,
        update_time=timestamp(stored.update_time),
    )


def _channels(email: bool, sms: bool, push: bool) -> notify_pb2.ChannelSelection:
    return notify_pb2.ChannelSelection(email=email, sms=sms, push=push)


def _duration(milliseconds: int) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(milliseconds=milliseconds))
    return duration
