"""notify_svc's SMTP mailer against a real SMTP server (aiosmtpd): one connection
per worker thread for many messages, and a connection the server dropped in
between is reopened without losing the message."""

from __future__ import annotations

import asyncio
import email
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from notify_svc.mailer import LOCAL_HOSTNAME, Email, SmtpMailer

pytestmark = pytest.mark.integration


class Recorder:
    """Keeps every message and every EHLO (one per SMTP connection)."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.greetings: list[str] = []

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        self.greetings.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, Recorder]]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller, recorder
    controller.stop()


def _email(n: int) -> Email:
    return Email(
        to=f"user{n}@example.com",
        subject=f"You received {n}.00 €",
        body=f"Hello {n}, 10.00 € arrived.",
        message_id=f"<n{n}@paymesh>",
        event_id=f"evt-{n}",
    )


async def test_many_messages_share_one_connection_and_keep_their_headers(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    controller, recorder = smtp_server
    mailer = SmtpMailer(controller.hostname, controller.port, "paymesh <no-reply@paymesh.example>", 5.0, connections=2)
    await asyncio.gather(*(mailer.send(_email(n)) for n in range(10)))
    for n in range(10, 15):
        await mailer.send(_email(n))
    await mailer.aclose()
    assert sorted(m["To"] for m in recorder.messages) == sorted(f"user{n}@example.com" for n in range(15))
    first = next(m for m in recorder.messages if m["Message-ID"] == "<n0@paymesh>")
    subject, charset = email.header.decode_header(first["Subject"])[0]
    assert isinstance(subject, bytes)
    assert (subject.decode(charset or "ascii"), first["Message-ID"], first["X-Paymesh-Event-Id"]) == (
        "You received 0.00 €",
        "<n0@paymesh>",
        "evt-0",
    )
    assert first.get_payload(decode=True).decode() == "Hello 0, 10.00 € arrived."  # type: ignore[union-attr]
    assert recorder.greetings in ([LOCAL_HOSTNAME], [LOCAL_HOSTNAME] * 2)  # one connection per mailer thread


async def test_a_connection_the_server_dropped_is_reopened_and_the_message_sent() -> None:
    recorder, port = Recorder(), _free_port()
    first = Controller(recorder, hostname="127.0.0.1", port=port)
    first.start()
    mailer = SmtpMailer("127.0.0.1", port, "no-reply@paymesh.example", 5.0)
    await mailer.send(_email(1))
    first.stop()  # drops every open connection
    restarted = Controller(recorder, hostname="127.0.0.1", port=port)
    restarted.start()
    try:
        for n in range(2, 6):
            await mailer.send(_email(n))
    finally:
        await mailer.aclose()
        restarted.stop()
    assert [m["Message-ID"] for m in recorder.messages] == [f"<n{n}@paymesh>" for n in range(1, 6)]
