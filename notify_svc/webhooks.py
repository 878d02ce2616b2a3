"""Merchant webhooks, the pure part: secrets, endpoint URL and event type rules.

Deliveries are signed with paymesh's one webhook scheme,
paymesh_runtime.webhook_signatures (`Paymesh-Signature: t=<unix>,v1=<hex
HMAC-SHA256 of "t.body">`), which payment_svc verifies on the way in;
docs/notifications.md has the recipe for merchants.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from paymesh_runtime.errors import validation_failed

EVENT_ID_HEADER = "Paymesh-Event-Id"
EVENT_TYPE_HEADER = "Paymesh-Event-Type"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)

MAX_URL_LENGTH = 2048
MAX_EVENT_TYPES = 50
MAX_EVENT_TYPE_LENGTH = 100
ALL_EVENTS = "*"
_EVENT_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def generate_secret() -> str:
    """A fresh signing secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def validate_url(url: str, allow_private_hosts: bool) -> str:
    """The endpoint URL, or VALIDATION_FAILED.

    https, or http to a loopback host (local development). Unless
    `allow_private_hosts` (local stack and tests), a host that is a
    loopback, private, link-local or otherwise non-public IP is refused, so a
    merchant cannot aim deliveries at the internal network; host names are
    checked again against what they resolve to at delivery time.
    """
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise validation_failed("url", f"must be 1 to {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise validation_failed("url", "must be an http or https URL")
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise validation_failed("url", "must name a host and carry no credentials")
    try:
        _ = parts.port
    except ValueError:
        raise validation_failed("url", "has an invalid port") from None
    loopback = host in _LOOPBACK_NAMES or _is_loopback_ip(host)
    if parts.scheme == "http" and not loopback:
        raise validation_failed("url", "must use https (http only for loopback hosts in local development)")
    if not allow_private_hosts and (loopback or not host_may_receive(host)):
        raise validation_failed("url", "must not point at a loopback, private or reserved address")
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
        if event_type != ALL_EVENTS and (len(event_type) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.match(event_type)):
            raise validation_failed("event_types", f'{event_type!r} is not an event type like "payment.succeeded"')
        if event_type not in distinct:
            distinct.append(event_type)
    return distinct
