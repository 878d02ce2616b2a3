"""python -m devstack.processor_sim --port N --webhook-url URL --webhook-secret S [fault flags]

Every flag also reads an environment variable PROCESSOR_SIM_<FLAG> (e.g.
PROCESSOR_SIM_WEBHOOK_SECRET, which keeps the secret out of `ps`).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading

from devstack.processor_sim.api import Faults, Simulator
from devstack.processor_sim.ledger import Ledger
from devstack.processor_sim.server import serve
from devstack.processor_sim.webhooks import WebhookSender


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PROCESSOR_SIM_{name.upper()}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack.processor_sim", description=__doc__)
    add = parser.add_argument
    add("--host", default=_env("host", "127.0.0.1"))
    add("--port", type=int, default=int(_env("port", "8091")), help="0 picks a free port (see --port-file)")
    add("--port-file", default="", help="write the port actually bound to this file once listening")
    add("--webhook-url", default=_env("webhook_url", ""), help="where payout results are POSTed")
    add("--webhook-secret", default=_env("webhook_secret", ""), help="HMAC key of Paymesh-Signature")
    add("--webhook-attempts", type=int, default=int(_env("webhook_attempts", "6")))
    add("--webhook-retry-seconds", type=float, default=float(_env("webhook_retry_seconds", "0.5")))
    add("--latency-ms", type=int, default=int(_env("latency_ms", "0")))
    add("--latency-jitter-ms", type=int, default=int(_env("latency_jitter_ms", "0")))
    add("--failure-rate", type=float, default=float(_env("failure_rate", "0")), help="share of POSTs answered 503")
    add(
        "--lost-response-rate",
        type=float,
        default=float(_env("lost_response_rate", "0")),
        help="share of POSTs that take effect, then drop the connection",
    )
    add("--hang-seconds", type=float, default=float(_env("hang_seconds", "30")))
    add("--payout-settle-seconds", type=float, default=float(_env("payout_settle_seconds", "1")))
    add("--refund-settle-seconds", type=float, default=float(_env("refund_settle_seconds", "1")))
    add("--seed", type=int, default=None, help="seed of the fault dice (reproducible runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    if args.webhook_url and not args.webhook_secret:
        print("--webhook-secret (or PROCESSOR_SIM_WEBHOOK_SECRET) is required with --webhook-url", file=sys.stderr)
        return 2
    faults = Faults(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        failure_rate=args.failure_rate,
        lost_response_rate=args.lost_response_rate,
        hang_seconds=args.hang_seconds,
        payout_settle_seconds=args.payout_settle_seconds,
        refund_settle_seconds=args.refund_settle_seconds,
    )

    def sender(ledger: Ledger, stopping: threading.Event) -> WebhookSender:
        return WebhookSender(
            args.webhook_url,
            args.webhook_secret,
            attempts=args.webhook_attempts,
            first_retry_seconds=args.webhook_retry_seconds,
            note=ledger.note_delivery,
            stopping=stopping,
        )

    simulator = Simulator(faults, sender, random.Random(args.seed))  # noqa: S311 - fault dice, not crypto
    serve(simulator, args.host, args.port, args.port_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
