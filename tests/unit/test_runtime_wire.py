"""paymesh_runtime.wire's Timestamp conversion: the same message as protobuf's own FromDatetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from paymesh_runtime.wire import timestamp

MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def _protobufs(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@given(MOMENTS, OFFSETS)
def test_an_aware_moment_converts_as_protobuf_converts_it(moment: datetime, zone: timezone) -> None:
    aware = moment.replace(tzinfo=zone)
    assert timestamp(aware) == _protobufs(aware)
    assert timestamp(aware).ToDatetime(tzinfo=UTC) == aware


@given(MOMENTS)
def test_a_naive_moment_is_taken_as_utc_as_protobuf_takes_it(moment: datetime) -> None:
    assert timestamp(moment) == _protobufs(moment)


def test_before_the_epoch_the_seconds_are_floored_and_the_nanos_positive() -> None:
    stamp = timestamp(datetime(1969, 12, 31, 23, 59, 59, 250_000, tzinfo=UTC))
    assert (stamp.seconds, stamp.nanos) == (-1, 250_000_000)


def test_none_stays_unset() -> None:
    assert timestamp(None) is None
