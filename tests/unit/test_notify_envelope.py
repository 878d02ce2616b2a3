"""The consumer's decoding of records (notify_svc.consumer): pure parts."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from notify_svc.consumer import PoisonMessage, decode_event, event_json, refused_by_database
from paymesh.events.v1 import events_pb2

EVENT_ID = "0b6f4c3e-5a8e-4a53-9b1e-0d8c1c1a2b3c"


def test_a_well_formed_envelope_decodes() -> None:
    raw = events_pb2.Event(id=EVENT_ID, type="payment.succeeded").SerializeToString()
    assert decode_event(raw).id == EVENT_ID


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "UNDECODABLE"),
        (b"\xff\xff\xff\xff", "UNDECODABLE"),
        (b'{"id": "json, not protobuf"}', "UNDECODABLE"),
        (events_pb2.Event(id="not-a-uuid", type="payment.succeeded").SerializeToString(), "INVALID_ENVELOPE"),
        (events_pb2.Event(id=EVENT_ID).SerializeToString(), "INVALID_ENVELOPE"),
    ],
)
def test_poison_records_are_recognised_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonMessage) as caught:
        decode_event(value)
    assert caught.value.reason == reason


def test_the_webhook_body_is_the_event_as_snake_case_json_with_every_field() -> None:
    event = events_pb2.Event(id=EVENT_ID, type="wallet.posted", aggregate_id="w1", sequence=3)
    body = json.loads(event_json(event))
    assert body["id"] == EVENT_ID
    assert body["aggregate_id"] == "w1"
    assert body["sequence"] == "3"  # int64 as a string, as proto JSON says
    assert body["producer"] == ""  # printed although empty


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (DBAPIError("INSERT", {}, _DriverError("22001")), True),  # a value too long for its column
        (DBAPIError("INSERT", {}, _DriverError("23503")), True),  # a foreign key
        (DataError("INSERT", {}, Exception()), True),
        (DBAPIError("INSERT", {}, _DriverError("55P03")), False),  # a lock timeout: retry
        (OperationalError("INSERT", {}, _DriverError("57P01")), False),  # the server shut down: retry
        (ConnectionRefusedError(), False),
    ],
)
def test_only_content_the_database_refuses_is_poison(error: Exception, refused: bool) -> None:
    assert refused_by_database(error) is refused
