"""Channel routing and validation of users' preferences (notify_svc.preferences)."""

from __future__ import annotations

import base64
import os

import pytest

from notify_svc.preferences import (
    DEFAULTS,
    ChannelChoice,
    Preferences,
    PushSubscriptionInput,
    decode_event_channels,
    encode_event_channels,
    validate_event_type_channels,
    validate_locale,
    validate_phone_number,
    validate_push_subscription,
)
from paymesh_runtime.errors import InvalidArgument

SMS_ONLY = ChannelChoice(email=False, sms=True, push=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_by_default_every_event_type_goes_by_email_only() -> None:
    assert DEFAULTS.channels_for("payment.succeeded") == ("EMAIL",)
    assert Preferences(has_phone=True, has_push=True).channels_for("wallet.frozen") == ("EMAIL",)


def test_a_per_event_type_choice_overrides_the_default_for_that_type_only() -> None:
    chosen = Preferences(per_event_type={"payment.succeeded": SMS_ONLY}, has_phone=True)
    assert chosen.channels_for("payment.succeeded") == ("SMS",)
    assert chosen.channels_for("payment.failed") == ("EMAIL",)


def test_sms_and_push_need_a_registered_address() -> None:
    everything = ChannelChoice(email=True, sms=True, push=True)
    assert Preferences(default=everything).channels_for("x.y") == ("EMAIL",)
    assert Preferences(default=everything, has_phone=True, has_push=True).channels_for("x.y") == (
        "EMAIL",
        "SMS",
        "PUSH",
    )


def test_per_event_type_choices_round_trip_through_their_stored_form() -> None:
    chosen = {"payment.succeeded": SMS_ONLY, "wallet.frozen": ChannelChoice()}
    stored = encode_event_channels(chosen)
    assert stored == {"payment.succeeded": ["SMS"], "wallet.frozen": ["EMAIL"]}
    assert decode_event_channels(stored) == chosen


@pytest.mark.parametrize("number", ["+14155550100", "+491701234567"])
def test_e164_numbers_are_accepted(number: str) -> None:
    assert validate_phone_number(number) == number


@pytest.mark.parametrize("number", ["4155550100", "+0155550100", "+1 415 555 0100", "+1234", "+1234567890123456"])
def test_other_phone_numbers_are_refused(number: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_phone_number(number)
    assert refused.value.field == "phone_number"


def test_an_empty_phone_number_removes_it() -> None:
    assert validate_phone_number("") is None


def test_locales_are_those_with_templates() -> None:
    assert validate_locale("de", frozenset({"en", "de"})) == "de"
    with pytest.raises(InvalidArgument):
        validate_locale("fr", frozenset({"en", "de"}))


def test_event_types_are_checked_and_listed_once() -> None:
    assert validate_event_type_channels([("payment.succeeded", SMS_ONLY)]) == {"payment.succeeded": SMS_ONLY}
    for bad in ([("Payment", SMS_ONLY)], [("a.b", SMS_ONLY), ("a.b", SMS_ONLY)], [("a.b", SMS_ONLY)] * 51):
        with pytest.raises(InvalidArgument):
            validate_event_type_channels(bad)


def test_a_push_subscription_needs_an_allowed_url_and_browser_keys() -> None:
    key = _b64url(b"\x04" + os.urandom(64))
    auth = _b64url(os.urandom(16))
    assert validate_push_subscription(PushSubscriptionInput("https://push.example.com/s/1", key, auth), False)
    assert not validate_push_subscription(PushSubscriptionInput("", "", ""), False)  # removes it
    for endpoint, p256dh, secret in [
        ("http://127.0.0.1:9/s", key, auth),  # loopback in production
        ("https://push.example.com/s/1", _b64url(os.urandom(33)), auth),
        ("https://push.example.com/s/1", key, _b64url(os.urandom(8))),
        ("https://push.example.com/s/1", "not base64!", auth),
    ]:
        with pytest.raises(InvalidArgument):
            validate_push_subscription(PushSubscriptionInput(endpoint, p256dh, secret), False)
    assert validate_push_subscription(PushSubscriptionInput("http://127.0.0.1:9/s", key, auth), True)
