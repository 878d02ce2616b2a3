"""The email as notify_svc renders it (notify_svc.mailer): what a mail client parses back, and no header injection."""

from __future__ import annotations

import email
import email.header
import email.policy

import pytest

from notify_svc.mailer import Email, SmtpMailer


def _render(to: str = "payee@example.com", subject: str = "You received 10.50 USD", body: str = "Hi") -> bytes:
    mailer = SmtpMailer("127.0.0.1", 1, "paymesh <no-reply@paymesh.example>", 1.0, connections=1)
    return mailer._message(Email(to, subject, body, "<n1@paymesh>", "evt-1"))


def test_a_message_parses_back_to_its_headers_and_body() -> None:
    raw = _render(subject="Payout of 1 000,00 € sent", body="Zeile 1: 10,00 €\nZeile 2 — fertig.")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"] == "paymesh <no-reply@paymesh.example>"
    assert message["To"] == "payee@example.com"
    assert message["Subject"] == "Payout of 1 000,00 € sent"  # RFC 2047, decoded by the parser
    assert message["Message-ID"] == "<n1@paymesh>"
    assert message["X-Paymesh-Event-Id"] == "evt-1"
    assert message["Date"] is not None
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Zeile 1: 10,00 €\nZeile 2 — fertig."
    assert b"\r\n\r\n" in raw
    assert all(line.endswith(b"\r") for line in raw.split(b"\n")[:-1])  # CRLF line ends throughout


def test_an_ascii_subject_is_sent_as_is() -> None:
    assert b"\r\nSubject: You received 10.50 USD\r\n" in _render()


@pytest.mark.parametrize(
    ("field", "value"),
    [("to", "victim@example.com\r\nBcc: everyone@example.com"), ("subject", "Hello\nBcc: everyone@example.com")],
)
def test_a_line_break_in_a_header_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        _render(**{field: value})


def test_a_message_with_html_is_multipart_alternative_text_first() -> None:
    mailer = SmtpMailer("127.0.0.1", 1, "paymesh <no-reply@paymesh.example>", 1.0, connections=1)
    raw = mailer._message(Email("a@example.com", "Hi", "Grüße\nzwei", "<n2@paymesh>", "evt-2", "<p>Grüße</p>"))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    parts = [(part.get_content_type(), part.get_content()) for part in message.iter_parts()]
    assert parts == [("text/plain", "Grüße\nzwei"), ("text/html", "<p>Grüße</p>")]
    assert all(line.endswith(b"\r") for line in raw.split(b"\n")[:-1])
