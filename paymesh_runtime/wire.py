"""Conversions between domain values and their protobuf messages, shared by every service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp

from paymesh.common.v1 import money_pb2
from paymesh_runtime.money import Money


@overload
def timestamp(moment: datetime) -> Timestamp: ...
@overload
def timestamp(moment: None) -> None: ...
@overload
def timestamp(moment: datetime | None) -> Timestamp | None: ...
def timestamp(moment: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None (an unset message field) for None. A naive datetime is taken as UTC,
    as by Timestamp.FromDatetime."""
    if moment is None:
        return None
    seconds, nanos = timestamp_parts(moment)
    return Timestamp(seconds=seconds, nanos=nanos)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def timestamp_parts(moment: datetime) -> tuple[int, int]:
    """Seconds since the epoch (floored) and nanoseconds, as a Timestamp holds them.

    Timestamp.FromDatetime gets the same from a calendar.timegm of a time tuple, three times the CPU of
    this subtraction (~3 µs against ~1); a payment's messages and events carry a few dozen timestamps.
    """
    since = moment - (_EPOCH if moment.tzinfo is not None else _NAIVE_EPOCH)
    return since.days * 86_400 + since.seconds, since.microseconds * 1_000


def money_message(value: Money) -> money_pb2.Money:
    return money_pb2.Money(currency=value.currency, amount=value.amount)
