"""paymesh_runtime.backoff and paymesh_runtime.sealing."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag

from paymesh_runtime.backoff import full_jitter
from paymesh_runtime.sealing import SecretSealer, parse_aes256_key


def test_backoff_doubles_up_to_the_cap_and_is_jittered_below_it() -> None:
    ceilings = [full_jitter(attempt, 1.0, 30.0, lambda: 0.999999) for attempt in range(1, 8)]
    assert [round(c) for c in ceilings] == [1, 2, 4, 8, 16, 30, 30]
    assert full_jitter(3, 1.0, 30.0, lambda: 0.0) == 0.0
    assert full_jitter(10_000, 1.0, 30.0, lambda: 0.5) == 15.0  # no overflow for huge attempts


def test_backoff_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        full_jitter(0, 1.0, 2.0, lambda: 0.5)


def test_a_sealed_secret_opens_only_with_its_key_and_context() -> None:
    key = os.urandom(32)
    sealed = SecretSealer(key).seal("row-1", b"whsec_abc")
    assert b"whsec_abc" not in sealed
    assert SecretSealer(key).open("row-1", sealed) == b"whsec_abc"
    with pytest.raises(InvalidTag):
        SecretSealer(key).open("row-2", sealed)
    with pytest.raises(InvalidTag):
        SecretSealer(os.urandom(32)).open("row-1", sealed)


def test_the_key_must_be_32_bytes_of_base64() -> None:
    raw = os.urandom(32)
    assert parse_aes256_key(base64.urlsafe_b64encode(raw).decode().rstrip("="), "K") == raw
    for bad in ("", "not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="K"):
            parse_aes256_key(bad, "K")
