"""Email over SMTP (a relay in production, a local sink in the stack and tests).

The standard library's smtplib runs in the mailer's own few threads, so no
async SMTP dependency is needed. Each thread keeps its SMTP connection open
between messages (a new connection per message costs a TCP handshake, the
greeting and EHLO every time), so the server sees at most `connections`
connections; one it dropped in between is reopened once. Each message carries a Message-ID derived from the
notification id, so in the rare case that a crash between sending and
recording repeats a send, the duplicate is recognisable (and dropped by MTAs
and clients that dedupe).
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.header import Header
from email.mime.text import MIMEText
from email.utils import formatdate

# Sent in EHLO. Without it smtplib resolves this host's fully qualified name on every connection.
LOCAL_HOSTNAME = "paymesh-notify"


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str
    message_id: str  # e.g. "<notification id@paymesh>"
    event_id: str


class SmtpMailer:
    """Sends emails to a configured SMTP server over per-thread connections."""

    def __init__(self, host: str, port: int, sender: str, timeout_seconds: float, connections: int = 4) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout_seconds
        self._local = threading.local()
        self._threads = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="smtp")

    async def send(self, email: Email) -> None:
        """Returns once the server accepted the message; raises on any refusal."""
        message = self._message(email)
        await asyncio.get_running_loop().run_in_executor(self._threads, self._send_blocking, email.to, message)

    async def aclose(self) -> None:
        """Stops the threads once they finished their sends; their connections close with them."""
        await asyncio.to_thread(self._threads.shutdown)

    def _message(self, email: Email) -> bytes:
        # The compat32 MIMEText: building an EmailMessage parses every header it is given.
        message = MIMEText(email.body, "plain", "utf-8")
        message["From"] = self._sender
        message["To"] = email.to
        message["Subject"] = email.subject if email.subject.isascii() else Header(email.subject, "utf-8").encode()
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = email.message_id
        message["X-Paymesh-Event-Id"] = email.event_id
        return message.as_bytes()

    def _send_blocking(self, to: str, message: bytes) -> None:
        reused: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if reused is not None:
            try:
                self._deliver(reused, to, message)
                return
            except smtplib.SMTPServerDisconnected:
                pass  # dropped while idle: open a new connection and send once more
        self._local.smtp = smtplib.SMTP(self._host, self._port, local_hostname=LOCAL_HOSTNAME, timeout=self._timeout)
        self._deliver(self._local.smtp, to, message)

    def _deliver(self, smtp: smtplib.SMTP, to: str, message: bytes) -> None:
        try:
            refused = smtp.sendmail(self._sender, [to], message)
        except smtplib.SMTPServerDisconnected:
            self._close()
            raise
        except smtplib.SMTPException:
            raise  # the server refused the message; the connection stays usable
        except OSError:
            self._close()  # a timeout or reset: the conversation's state is unknown
            raise
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)

    def _close(self) -> None:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()
