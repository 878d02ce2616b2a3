"""The notification preference methods of NotifyService: a user's own, and nobody else's.

Get and Update act on the caller's preferences only (an admin's call acts on
the admin's own): a phone number or push subscription is registered by its
owner and never shown to anyone else; the subscription is never shown at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from notify_svc import preferences
from notify_svc.messages import preferences_message
from notify_svc.preference_store import PreferenceStore
from notify_svc.push import PushSubscriptionData, push_context
from paymesh.notify.v1 import notify_pb2
from paymesh_runtime.errors import validation_failed
from paymesh_runtime.identity import Context, require_user
from paymesh_runtime.sealing import SecretSealer

UPDATABLE_FIELDS = ("locale", "default_channels", "event_type_channels", "phone_number", "push_subscription")


class PreferenceApi:
    def __init__(
        self, store: PreferenceStore, sealer: SecretSealer, locales: frozenset[str], *, allow_private_hosts: bool
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._locales = locales
        self._allow_private_hosts = allow_private_hosts

    async def get(
        self, request: notify_pb2.GetNotificationPreferencesRequest, context: Context
    ) -> notify_pb2.NotificationPreferences:
        user = require_user(context)
        return preferences_message(await self._store.get(user.user_id))

    async def update(
        self, request: notify_pb2.UpdateNotificationPreferencesRequest, context: Context
    ) -> notify_pb2.NotificationPreferences:
        user = require_user(context)
        wanted = request.notification_preferences
        changes: dict[str, object] = {}
        for path in _update_paths(request):
            if path == "locale":
                changes["locale"] = preferences.validate_locale(wanted.locale, self._locales)
            elif path == "default_channels":
                chosen = wanted.default_channels
                changes |= {"default_email": chosen.email, "default_sms": chosen.sms, "default_push": chosen.push}
            elif path == "event_type_channels":
                entries = [
                    (entry.event_type, preferences.ChannelChoice(entry.channels.email, entry.channels.sms,
                                                                 entry.channels.push))
                    for entry in wanted.event_type_channels
                ]  # fmt: skip
                chosen_types = preferences.validate_event_type_channels(entries)
                changes["event_channels"] = preferences.encode_event_channels(chosen_types)
            elif path == "phone_number":
                changes["phone_number"] = preferences.validate_phone_number(wanted.phone_number)
            else:
                changes["push_subscription_sealed"] = self._sealed_subscription(user.user_id, wanted.push_subscription)
        return preferences_message(await self._store.update(user.user_id, changes))

    def _sealed_subscription(self, user_id: str, subscription: notify_pb2.PushSubscription) -> bytes | None:
        given = preferences.PushSubscriptionInput(subscription.endpoint, subscription.p256dh, subscription.auth)
        if not preferences.validate_push_subscription(given, self._allow_private_hosts):
            return None
        data = PushSubscriptionData(subscription.endpoint.strip(), subscription.p256dh, subscription.auth)
        return self._sealer.seal(push_context(user_id), data.to_json())


def _update_paths(request: notify_pb2.UpdateNotificationPreferencesRequest) -> Sequence[str]:
    """The fields to change: update_mask's, or (AIP-134) those set in the request."""
    paths = list(dict.fromkeys(request.update_mask.paths))
    if not paths:
        wanted = request.notification_preferences
        present = {
            "locale": bool(wanted.locale),
            "default_channels": wanted.HasField("default_channels"),
            "event_type_channels": bool(wanted.event_type_channels),
            "phone_number": bool(wanted.phone_number),
            "push_subscription": wanted.HasField("push_subscription"),
        }
        paths = [name for name in UPDATABLE_FIELDS if present[name]]
    unknown = [path for path in paths if path not in UPDATABLE_FIELDS]
    if unknown:
        raise validation_failed("update_mask", f"{unknown[0]!r} cannot be updated; only {', '.join(UPDATABLE_FIELDS)}")
    if not paths:
        raise validation_failed("update_mask", "nothing to update")
    return paths
