"""A local SMTP server for notify_svc's email (aiosmtpd, printing each message).

In production NOTIFY_SMTP_HOST points at a real relay; locally and in tests the
mail lands here and is printed to .run/<profile>/logs/mailsink.log, each
message as it arrived between aiosmtpd's Debugging markers. (The stock
Debugging handler parses every header of every message; at two emails per
payment that cost as much CPU as payment_svc itself, and the bench counts it.)
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from devstack.components import Component
from devstack.ports import HOST
from devstack.services import background


class MailSink(Component):
    name = "mailsink"
    start_timeout = 20.0
    stop_timeout = 10.0

    def address(self) -> str:
        return f"smtp://{HOST}:{self.ctx.ports.smtp}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.smtp]

    def command(self) -> list[str]:
        address = f"{HOST}:{self.ctx.ports.smtp}"
        command = [sys.executable, "-m", "aiosmtpd", "-n", "-l", address, "-c", f"{__name__}.RawPrinter"]
        # Like notify_svc, whose mail it receives, it yields the CPU to the money path (local stack only).
        return background(command) if self.ctx.profile == "local" else command

    def is_healthy(self) -> bool:
        # Ready means it greets like an SMTP server (220), not merely that the port is open.
        try:
            with socket.create_connection((HOST, self.ctx.ports.smtp), timeout=2) as conn:
                greeting = conn.recv(512)
                conn.sendall(b"QUIT\r\n")
                return greeting.startswith(b"220")
        except OSError:
            return False


class RawPrinter:
    """aiosmtpd handler: prints each accepted message unparsed, framed like aiosmtpd's Debugging handler."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        out = sys.stdout.buffer
        out.write(b"---------- MESSAGE FOLLOWS ----------\n" + data.replace(b"\r\n", b"\n"))
        out.write(b"\n------------ END MESSAGE ------------\n")
        out.flush()
        return "250 OK"
