"""Email over SMTP (a relay in production, a local sink in the stack and tests).

The standard library's smtplib runs in a worker thread: one short
conversation per notification, so no async SMTP dependency is needed.
Each message carries a Message-ID derived from the notification id, so in the
rare case that a crash between sending and recording repeats a send, the
duplicate is recognisable (and dropped by MTAs and clients that dedupe).
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str
    message_id: str  # e.g. "<notification id@paymesh>"
    event_id: str


class SmtpMailer:
    """Sends one email per call to a configured SMTP server."""

    def __init__(self, host: str, port: int, sender: str, timeout_seconds: float) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout_seconds

    async def send(self, email: Email) -> None:
        """Returns once the server accepted the message; raises on any refusal."""
        await asyncio.to_thread(self._send_blocking, self._message(email))

    def _message(self, email: Email) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = email.message_id
        message["X-Paymesh-Event-Id"] = email.event_id
        message.set_content(email.body)
        return message

    def _send_blocking(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            refused = smtp.send_message(message)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
