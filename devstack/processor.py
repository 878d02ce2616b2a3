"""The card processor simulator (devstack.processor_sim) as a stack component.

It posts payout results to Envoy's public webhook route, which transcodes
them to payment_svc's HandleProcessorWebhook; the webhook secret comes from
the run dir's secrets.env through the environment (never the command line).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from devstack.components import Component
from devstack.ports import HOST


class ProcessorSimulator(Component):
    name = "processor"
    start_timeout = 20.0
    stop_timeout = 10.0

    def address(self) -> str:
        return f"http://{HOST}:{self.ctx.ports.processor}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.processor]

    def webhook_url(self) -> str:
        return f"http://{HOST}:{self.ctx.ports.envoy}/v1/processor-webhooks/simulator"

    def command(self) -> list[str]:
        port = str(self.ctx.ports.processor)
        return [sys.executable, "-m", "devstack.processor_sim", "--host", HOST, "--port", port]

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PROCESSOR_SIM_WEBHOOK_URL": self.webhook_url(),
            "PROCESSOR_SIM_WEBHOOK_SECRET": self.ctx.secrets.processor_webhook_secret,
        }

    def is_healthy(self) -> bool:
        try:
            # The URL is always http://127.0.0.1:<processor port>.
            with urllib.request.urlopen(f"{self.address()}/healthz", timeout=2) as reply:  # noqa: S310
                return bool(reply.status == 200 and json.load(reply).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False
