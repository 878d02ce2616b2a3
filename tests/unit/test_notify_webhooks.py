"""The former Paymesh-Signature scheme (still sent to endpoints with a secret from before Standard Webhooks), and
endpoint validation (notify_svc.webhooks)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from notify_svc.webhooks import generate_secret, validate_event_types, validate_url
from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.webhook_signatures import signature_header, verify_signature

SECRET = "whsec_test"
BODY = b'{"id":"e1","type":"payment.succeeded"}'


def test_the_signature_is_an_hmac_of_timestamp_dot_body() -> None:
    header = signature_header(SECRET, 1_700_000_000, BODY)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_a_signature_verifies_with_the_right_secret_body_and_a_recent_time() -> None:
    header = signature_header(SECRET, 1_700_000_000, BODY)
    assert verify_signature(header, BODY, SECRET, now=1_700_000_100)


@pytest.mark.parametrize(
    ("body", "secret", "now"),
    [
        (BODY + b" ", SECRET, 1_700_000_000),  # tampered body
        (BODY, "whsec_other", 1_700_000_000),  # wrong secret
        (BODY, SECRET, 1_700_000_000 + 301),  # replayed too late
    ],
)
def test_a_signature_fails_for_another_body_secret_or_an_old_timestamp(body: bytes, secret: str, now: int) -> None:
    header = signature_header(SECRET, 1_700_000_000, BODY)
    assert not verify_signature(header, body, secret, now=now)


@pytest.mark.parametrize("header", ["", "v1=abc", "t=x,v1=abc", "t=1,t=2,v1=abc"])
def test_malformed_signature_headers_do_not_verify(header: str) -> None:
    assert not verify_signature(header, BODY, SECRET, now=1)


def test_secrets_are_fresh_and_long() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(first) >= 40


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/paymesh", "https://8.8.8.8:8443/hook", "https://example.com/h?x=1"]
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert validate_url(url, allow_private_hosts=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "http://example.com/hook",  # http only for loopback
        "https://user:pw@example.com/hook",
        "https:///nohost",
        "https://example.com:99999/hook",
        "https://" + "a" * 2050 + ".com/",
    ],
)
def test_malformed_or_non_https_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_url(url, allow_private_hosts=True)
    assert (caught.value.reason, caught.value.field) == ("VALIDATION_FAILED", "url")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "https://10.0.0.5/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
    ],
)
def test_private_and_loopback_hosts_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_url(url, allow_private_hosts=False)


def test_the_relaxed_profile_accepts_loopback_receivers() -> None:
    assert validate_url("http://127.0.0.1:8000/hook", allow_private_hosts=True)


def test_event_types_are_checked_and_deduplicated() -> None:
    assert validate_event_types(["payment.succeeded", "*", "payment.succeeded"]) == ["payment.succeeded", "*"]
    for bad in ([], ["Payment.Succeeded"], ["payment"], ["payment.succeeded; drop"], ["a." + "b" * 100]):
        with pytest.raises(InvalidArgument):
            validate_event_types(bad)
