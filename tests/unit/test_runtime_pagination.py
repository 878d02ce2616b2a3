"""Page tokens: signed, bound to their query, expiring, and their cursors checked before use."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.pagination import TOKEN_LIFETIME, PageTokens
from paymesh_runtime.settings import ServiceSettings

KEY = b"k" * 32
QUERY = ["payments", "user-1"]
POSITION = (datetime(2026, 12, 6, 21, 0, 0, 123456, tzinfo=UTC), uuid.UUID("5b0f3a8e-3c0b-4a57-9e51-8a3c5e0f7d21"))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _refused(decode: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        decode()  # type: ignore[operator]
    assert (caught.value.reason, caught.value.field) == ("INVALID_PAGE_TOKEN", "page_token")
    return caught.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_position_and_a_sequence_round_trip_and_an_empty_token_is_the_first_page() -> None:
    tokens = PageTokens(KEY)
    assert tokens.decode_position(tokens.encode_position(POSITION, QUERY), QUERY) == POSITION
    assert tokens.decode_sequence(tokens.encode_sequence(2**63 - 1, QUERY), QUERY) == 2**63 - 1
    assert tokens.decode_position("", QUERY) is None
    assert tokens.decode_sequence("", QUERY) is None


def test_a_token_of_another_query_or_another_key_is_refused() -> None:
    token = PageTokens(KEY).encode_position(POSITION, QUERY)
    _refused(lambda: PageTokens(KEY).decode_position(token, ["payments", "user-2"]))
    _refused(lambda: PageTokens(KEY).decode_position(token, ["payments", "*"]))
    _refused(lambda: PageTokens(b"o" * 32).decode_position(token, QUERY))


def test_every_altered_token_is_refused() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode_position(POSITION, QUERY)
    payload, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["c"][1] = uuid.uuid4().hex  # someone else's row
    forged = f"{_b64(json.dumps(body).encode())}.{mac}"
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (forged, flipped, payload, f"{payload}.", f"{payload}.{mac}!", f"{payload}!.{mac}", "x" * 600, "é.é"):
        _refused(lambda bad=bad: tokens.decode_position(bad, QUERY))  # type: ignore[misc]


def test_a_token_expires_after_its_lifetime() -> None:
    clock = Clock()
    tokens = PageTokens(KEY, clock=clock)
    token = tokens.encode_sequence(42, QUERY)
    clock.now += TOKEN_LIFETIME.total_seconds() - 1
    assert tokens.decode_sequence(token, QUERY) == 42
    clock.now += 2
    _refused(lambda: tokens.decode_sequence(token, QUERY))


@pytest.mark.parametrize(
    "cursor",
    [
        [2**63],  # out of bigint range (ListEntries answered 500)
        [-1],
        [True],
        ["42"],
        [1.5],
        [],
        [1, 2],
    ],
)
def test_a_signed_sequence_cursor_out_of_type_or_range_is_refused(cursor: list[object]) -> None:
    tokens = PageTokens(KEY)
    _refused(lambda: tokens.decode_sequence(tokens._encode(cursor, QUERY), QUERY))


@pytest.mark.parametrize(
    "cursor",
    [
        [10**20, uuid.uuid4().hex],  # beyond year 9999
        [-5, uuid.uuid4().hex],
        ["2026-12-06T21:00:00", uuid.uuid4().hex],  # ListPayments answered 500 (ValueError) on such
        [0, "not-a-uuid"],
        [0, 42],
        [0],
    ],
)
def test_a_signed_position_cursor_out_of_type_or_range_is_refused(cursor: list[object]) -> None:
    tokens = PageTokens(KEY)
    _refused(lambda: tokens.decode_position(tokens._encode(cursor, QUERY), QUERY))


def test_the_key_is_the_setting_else_derived_from_the_service_token_secret_never_a_constant() -> None:
    shared = "s" * 48
    own = PageTokens.from_settings(
        ServiceSettings(page_token_key=SecretStr("p" * 40), service_token_secret=SecretStr(shared))
    )
    derived = PageTokens.from_settings(ServiceSettings(service_token_secret=SecretStr(shared)))
    again = PageTokens.from_settings(ServiceSettings(service_token_secret=SecretStr(shared)))
    other = PageTokens.from_settings(ServiceSettings(service_token_secret=SecretStr("t" * 48)))
    token = derived.encode_position(POSITION, QUERY)
    assert again.decode_position(token, QUERY) == POSITION  # every replica derives the same key
    _refused(lambda: own.decode_position(token, QUERY))
    _refused(lambda: other.decode_position(token, QUERY))
    # Without either setting each process draws its own key: two processes never agree.
    first, second = (PageTokens.from_settings(ServiceSettings()) for _ in range(2))
    _refused(lambda: second.decode_position(first.encode_position(POSITION, QUERY), QUERY))


def test_a_short_key_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        PageTokens.from_settings(ServiceSettings(page_token_key=SecretStr("short")))
    with pytest.raises(ValueError, match="at least 32"):
        PageTokens(b"x" * 31, lifetime=timedelta(hours=1))
