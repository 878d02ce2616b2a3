"""Conversions between domain values and their protobuf messages, shared by every service."""

from __future__ import annotations

from datetime import datetime
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
    """A protobuf Timestamp, or None (an unset message field) for None."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def money_message(value: Money) -> money_pb2.Money:
    return money_pb2.Money(currency=value.currency, amount=value.amount)
