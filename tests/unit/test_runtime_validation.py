"""The request check every method runs first (paymesh_runtime.validation): a request that does not
decode, or holds U+0000 in any string field however deep, is refused naming the field."""

from __future__ import annotations

import pytest
from google.api import httpbody_pb2

from paymesh.auth.v1 import auth_pb2
from paymesh.common.v1 import money_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.validation import Refused, checked


def _refusal(message_type: type, raw: bytes) -> tuple[str, str | None, str]:
    deserialize = checked(message_type.FromString)  # type: ignore[attr-defined]
    assert deserialize is not None
    refused = deserialize(raw)
    assert isinstance(refused, Refused), refused
    return refused.error.reason, refused.error.field, refused.error.message


def _batch() -> wallet_pb2.PostTransactionsRequest:
    wallet = wallet_pb2.AccountRef(wallet_id="5b0f3a8e-3c0b-4a57-9e51-8a3c5e0f7d21")
    settlement = wallet_pb2.AccountRef(system_account=wallet_pb2.EXTERNAL_SETTLEMENT)
    return wallet_pb2.PostTransactionsRequest(
        transactions=[
            wallet_pb2.PostTransactionRequest(
                reference=f"ref-{i}",
                payment_id="p",
                postings=[
                    wallet_pb2.Posting(account=settlement, amount=money_pb2.Money(currency="USD", amount=-5)),
                    wallet_pb2.Posting(account=wallet, amount=money_pb2.Money(currency="USD", amount=5)),
                ],
            )
            for i in range(3)
        ]
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (auth_pb2.RegisterRequest(email="a\x00@example.com", password="p" * 12), "email"),
        (auth_pb2.RegisterRequest(email="a@example.com", display_name="\x00"), "display_name"),
        (payment_pb2.CreatePaymentRequest(source=payment_pb2.PaymentSource(card_token="tok\x00")), "source.card_token"),
        (payment_pb2.CreatePaymentRequest(amount=money_pb2.Money(currency="US\x00", amount=1)), "amount.currency"),
        (payment_pb2.CancelPaymentRequest(payment_id="p", reason="r\x00"), "reason"),
    ],
)
def test_a_nul_in_a_string_field_is_refused_naming_the_field(request_: object, field: str) -> None:
    reason, named, message = _refusal(type(request_), request_.SerializeToString())  # type: ignore[attr-defined]
    assert (reason, named) == ("VALIDATION_FAILED", field)
    assert "NUL" in message


def test_a_nul_deep_in_a_repeated_field_is_named_by_its_index() -> None:
    batch = _batch()
    batch.transactions[2].postings[1].amount.currency = "U\x00SD"
    reason, field, _ = _refusal(wallet_pb2.PostTransactionsRequest, batch.SerializeToString())
    assert (reason, field) == ("VALIDATION_FAILED", "transactions[2].postings[1].amount.currency")


def test_zero_bytes_that_are_not_in_a_string_pass() -> None:
    # An empty nested message, an explicit zero in a oneof and zero bytes in a bytes field all put a
    # zero byte on the wire; none is a NUL in a string.
    capture = payment_pb2.CapturePaymentRequest(payment_id="p")
    capture.amount.SetInParent()
    webhook = payment_pb2.HandleProcessorWebhookRequest(processor="simulator", body=httpbody_pb2.HttpBody(data=b"\0\0"))
    batch = _batch()
    batch.transactions[0].postings.add()
    for request in (capture, webhook, batch):
        raw = request.SerializeToString()
        assert b"\x00" in raw
        deserialize = checked(type(request).FromString)
        assert deserialize is not None
        assert deserialize(raw) == request


@pytest.mark.parametrize(
    ("message_type", "raw", "field"),
    [
        # GET /v1/payments/%FF%FE: Envoy puts the bytes into payment_id as they are.
        (payment_pb2.GetPaymentRequest, b"\x0a\x02\xff\xfe", "payment_id"),
        (payment_pb2.HandleProcessorWebhookRequest, b"\x0a\x02\xc3\x28", "processor"),
        # Nested and repeated: transactions[1].postings[0].account.wallet_id.
        (
            wallet_pb2.PostTransactionsRequest,
            b"\x0a\x03\x0a\x01a" + b"\x0a\x0a\x12\x08\x0a\x06\x0a\x04\xc3\x28ab",
            "transactions[1].postings[0].account.wallet_id",
        ),
    ],
)
def test_invalid_utf8_is_refused_naming_the_field_without_a_class_name(
    message_type: type, raw: bytes, field: str
) -> None:
    reason, named, message = _refusal(message_type, raw)
    assert (reason, named) == ("VALIDATION_FAILED", field)
    assert "Error" not in message
    assert "decode" not in message.lower()


def test_bytes_that_are_no_message_at_all_are_refused_without_a_field() -> None:
    reason, field, message = _refusal(payment_pb2.GetPaymentRequest, b"\xff\xff\xff")
    assert (reason, field) == ("VALIDATION_FAILED", None)
    assert message == "the request is not a valid paymesh.payment.v1.GetPaymentRequest message"


def test_an_honest_request_comes_through_unchanged() -> None:
    request = payment_pb2.CreatePaymentRequest(
        source=payment_pb2.PaymentSource(wallet_id="w"),
        destination_wallet_id="d",
        amount=money_pb2.Money(currency="JPY", amount=1050),
        description="two coffees ☕ and a crêpe",
    )
    deserialize = checked(payment_pb2.CreatePaymentRequest.FromString)
    assert deserialize is not None
    assert deserialize(request.SerializeToString()) == request
    assert checked(None) is None


def test_a_page_token_that_is_not_even_text_is_an_invalid_page_token() -> None:
    nul = payment_pb2.ListPaymentsRequest(page_token="abc\x00").SerializeToString()
    not_utf8 = b"\x12\x02\xff\x00"  # field 2 (page_token) = FF 00
    for raw in (nul, not_utf8):
        reason, field, _ = _refusal(payment_pb2.ListPaymentsRequest, raw)
        assert (reason, field) == ("INVALID_PAGE_TOKEN", "page_token")
