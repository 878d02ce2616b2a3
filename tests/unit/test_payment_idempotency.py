"""Idempotency-Key rules that need no database."""

from __future__ import annotations

import pytest

from payment_svc.idempotency import fingerprint, validate_key
from paymesh_runtime.errors import InvalidArgument


@pytest.mark.parametrize("raw", [None, "", "   ", "k" * 256, "naïve", "tab\tkey"])
def test_a_missing_or_malformed_key_is_refused(raw: str | None) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_key(raw)
    assert caught.value.reason == "IDEMPOTENCY_KEY_REQUIRED"


def test_a_printable_key_up_to_255_characters_is_accepted() -> None:
    assert validate_key(" order-42 ") == "order-42"
    assert validate_key("k" * 255) == "k" * 255


def test_the_fingerprint_separates_methods_and_bodies() -> None:
    assert fingerprint("CreatePayment", b"x") == fingerprint("CreatePayment", b"x")
    assert fingerprint("CreatePayment", b"x") != fingerprint("CreateRefund", b"x")
    assert fingerprint("CreatePayment", b"x") != fingerprint("CreatePayment", b"y")
