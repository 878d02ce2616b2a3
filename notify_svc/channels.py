"""The channels a notification travels on, behind one interface: email, SMS and push (webhooks, which keep
an attempt log and tell on their endpoint's health, are sent by notify_svc.webhook_sender).

A channel's `send` returns once the provider accepted the message, raises
DeliveryFailed for a failure worth retrying (the provider is down, the
recipient's address is not known yet) and Undeliverable for one no retry
can mend (no phone number or push subscription any more, a number the
provider refuses): the delivery is then CANCELED.
"""

from __future__ import annotations

from typing import Protocol

from notify_svc.delivery_records import Delivery, DeliveryFailed, Undeliverable
from notify_svc.mailer import Email, SmtpMailer
from notify_svc.push import PushProvider, PushSubscriptionData, push_context
from notify_svc.sms import SmsProvider
from paymesh_runtime.sealing import SecretSealer


class Channel(Protocol):
    async def send(self, delivery: Delivery) -> None: ...


class EmailChannel:
    def __init__(self, mailer: SmtpMailer) -> None:
        self._mailer = mailer

    async def send(self, delivery: Delivery) -> None:
        if not delivery.email:
            # user.registered arrives on another topic and may come later.
            raise DeliveryFailed("the recipient's email address is not known yet")
        await self._mailer.send(
            Email(
                to=delivery.email,
                subject=delivery.subject,
                body=delivery.body,
                html=delivery.body_html,
                message_id=f"<{delivery.notification_id}@paymesh>",
                event_id=str(delivery.event_id),
            )
        )


class SmsChannel:
    def __init__(self, provider: SmsProvider) -> None:
        self._provider = provider

    async def send(self, delivery: Delivery) -> None:
        if not delivery.phone_number:
            raise Undeliverable("no phone number is registered any more")
        await self._provider.send(delivery.phone_number, delivery.body)


class PushChannel:
    def __init__(self, provider: PushProvider, sealer: SecretSealer) -> None:
        self._provider = provider
        self._sealer = sealer

    async def send(self, delivery: Delivery) -> None:
        if delivery.push_subscription_sealed is None:
            raise Undeliverable("no push subscription is registered any more")
        opened = self._sealer.open(push_context(delivery.user_id), delivery.push_subscription_sealed)
        subscription = PushSubscriptionData.from_json(opened)
        await self._provider.send(subscription, delivery.subject, delivery.body, str(delivery.notification_id))
