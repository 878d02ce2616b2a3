"""Merchant webhooks, the pure part: secrets, endpoint URL, event type and description rules.

Deliveries are signed as Standard Webhooks (notify_svc.signing); secrets
have that specification's form, `whsec_` and the base64 of random bytes.
Endpoints created before that got `whsec_` and url-safe base64, which
Standard Webhooks libraries cannot decode: `is_standard_secret` tells them
apart, and deliveries to such endpoints also carry the former
`Paymesh-Signature` header until their secret is rotated.
docs/notifications.md has the recipe for merchants.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from paymesh_runtime.errors import validation_failed

EVENT_ID_HEADER = "Paymesh-Event-Id"
EVENT_TYPE_HEADER = "Paymesh-Event-Type"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
# Events paymesh makes itself: a test delivery, and the email telling an owner that an endpoint was disabled.
TEST_EVENT_TYPE = "webhook.test"
ENDPOINT_DISABLED_EVENT_TYPE = "webhook_endpoint.disabled"
MAX_DESCRIPTION_LENGTH = 500
MAX_OVERLAP_SECONDS = 7 * 24 * 3600

MAX_URL_LENGTH = 2048
MAX_EVENT_TYPES = 50
MAX_EVENT_TYPE_LENGTH = 100
ALL_EVENTS = "*"
_EVENT_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def generate_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: `whsec_` and the base64 of 256 random bits."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def is_standard_secret(secret: str) -> bool:
    """Whether `secret` is `whsec_` and strict base64 of 24 to 64 bytes (what Standard Webhooks libraries decode)."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(key) <= 64


def validate_description(description: str) -> str:
    """The description, or VALIDATION_FAILED."""
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise validation_failed("description", f"at most {MAX_DESCRIPTION_LENGTH} characters")
    return description


def validate_overlap(seconds: float) -> float:
    """A rotation's overlap in seconds, or VALIDATION_FAILED."""
    if not 0 <= seconds <= MAX_OVERLAP_SECONDS:
        raise validation_failed("overlap", f"must be between 0 and {MAX_OVERLAP_SECONDS} seconds (7 days)")
    return seconds


def validate_url(url: str, allow_private_hosts: bool, field: str = "url") -> str:
    """The endpoint URL, or VALIDATION_FAILED.

    https, or http to a loopback host (local development). Unless
    `allow_private_hosts` (local stack and tests), a host that is a
    loopback, private, link-local or otherwise non-public IP is refused, so a
    merchant cannot aim deliveries at the internal network; host names are
    checked again against what they resolve to at delivery time.
    """
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise validation_failed(field, f"must be 1 to {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise validation_failed(field, "must be an http or https URL")
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise validation_failed(field, "must name a host and carry no credentials")
    try:
        _ = parts.port
    except ValueError:
        raise validation_failed(field, "has an invalid port") from None
    loopback = host in _LOOPBACK_NAMES or _is_loopback_ip(host)
    if parts.scheme == "http" and not loopback:
        raise validation_failed(field, "must use https (http only for loopback hosts in local development)")
    if not allow_private_hosts and (loopback or not host_may_receive(host)):
        raise validation_failed(field, "must not point at a loopback, private or reserved address")
    return url


def host_may_receive(host: str) -> bool:
    """False for IP literals outside the public internet; names are checked when resolved."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host not in _LOOPBACK_NAMES
    return address_is_public(address)


def address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_event_types(event_types: Sequence[str]) -> list[str]:
    """Distinct event types in request order, or VALIDATION_FAILED."""
    if not event_types:
        raise validation_failed("event_types", 'at least one event type (or "*") is required')
    if len(event_types) > MAX_EVENT_TYPES:
        raise validation_failed("event_types", f"at most {MAX_EVENT_TYPES} event types")
    distinct: list[str] = []
    for event_type in event_types:
        if event_type != ALL_EVENTS and not is_event_type(event_type):
            raise validation_failed("event_types", f'{event_type!r} is not an event type like "payment.succeeded"')
        if event_type not in distinct:
            distinct.append(event_type)
    return distinct


def is_event_type(event_type: str) -> bool:
    """A dotted lower-case name such as "payment.succeeded"."""
    return len(event_type) <= MAX_EVENT_TYPE_LENGTH and _EVENT_TYPE.match(event_type) is not None
