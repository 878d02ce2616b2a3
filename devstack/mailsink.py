"""A local SMTP server for notify_svc's email (aiosmtpd, printing each message).

In production NOTIFY_SMTP_HOST points at a real relay; locally and in tests the
mail lands here and is printed to .run/<profile>/logs/mailsink.log.
"""

from __future__ import annotations

import socket
import sys

from devstack.components import Component
from devstack.ports import HOST


class MailSink(Component):
    name = "mailsink"
    start_timeout = 20.0
    stop_timeout = 10.0

    def address(self) -> str:
        return f"smtp://{HOST}:{self.ctx.ports.smtp}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.smtp]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{HOST}:{self.ctx.ports.smtp}"]

    def is_healthy(self) -> bool:
        # Ready means it greets like an SMTP server (220), not merely that the port is open.
        try:
            with socket.create_connection((HOST, self.ctx.ports.smtp), timeout=2) as conn:
                greeting = conn.recv(512)
                conn.sendall(b"QUIT\r\n")
                return greeting.startswith(b"220")
        except OSError:
            return False
