"""Operator commands: `python -m payment_svc <command>` (see docs/operations.md).

- unresolved: the processor steps whose outcome is unknown and not resolved
  yet (a payout, capture or refund paymesh keeps asking the processor about).
- resolve --kind payout|refund --id ID --outcome succeeded|declined [--code C]:
  records the outcome an operator confirmed with the processor (its
  dashboard, its support) for a payout or card refund the processor never
  answers for. It is stored exactly like a processor's webhook, and the
  running service settles the resource from it: a payout SUCCEEDED captures
  its hold, DECLINED releases it. Only where no outcome is stored yet.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from payment_svc import store
from paymesh_runtime.app import Command
from paymesh_runtime.db import create_engine
from paymesh_runtime.settings import ServiceSettings

OUTCOMES = {"succeeded": "SUCCEEDED", "declined": "DECLINED"}


def _command(job: Callable[[AsyncEngine, argparse.Namespace], Awaitable[int]]) -> Command:
    def command(settings: ServiceSettings, args: argparse.Namespace) -> None:
        async def main() -> int:
            engine = create_engine(settings)
            try:
                return await job(engine, args)
            finally:
                await engine.dispose()

        status = asyncio.run(main())
        if status:
            raise SystemExit(status)

    return command


def _configure_unresolved(parser: argparse.ArgumentParser) -> None:
    parser.description = "List processor steps whose outcome is unknown and still being asked about."


async def _unresolved(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.connect() as conn:
        steps = await store.unresolved_steps(conn)
    for step in steps:
        print(
            f"{step.kind} {step.resource_id}  step {step.step}  state {step.state}  attempts {step.attempts}  "
            f"since {step.started_at.isoformat()}  reference {step.reference}"
        )
    print(f"{len(steps)} unresolved", file=sys.stderr)
    return 0


def _configure_resolve(parser: argparse.ArgumentParser) -> None:
    parser.description = "Record a payout's or card refund's outcome confirmed with the processor."
    parser.add_argument("--kind", choices=["payout", "refund"], required=True)
    parser.add_argument("--id", required=True, type=uuid.UUID, dest="resource_id")
    parser.add_argument("--outcome", choices=sorted(OUTCOMES), required=True)
    parser.add_argument("--code", default="resolved_by_operator", help="failure code of a declined outcome")


async def _resolve(engine: AsyncEngine, args: argparse.Namespace) -> int:
    code = args.code if args.outcome == "declined" else ""
    async with engine.begin() as conn:
        row = await store.get_row(conn, args.kind, args.resource_id, for_update=True)
        if row is None:
            print(f"resolve: no {args.kind} {args.resource_id}", file=sys.stderr)
            return 1
        if row.state in ("SUCCEEDED", "FAILED"):
            print(f"resolve: {args.kind} {args.resource_id} is already {row.state}", file=sys.stderr)
            return 1
        # The processor step (named like the kind) must have been sent: there is nothing to resolve otherwise.
        if await store.get_step(conn, args.resource_id, args.kind) is None:
            print(f"resolve: {args.kind} {args.resource_id} was never sent to the processor", file=sys.stderr)
            return 1
        stored = await store.store_processor_outcome(
            conn, args.kind, args.resource_id, OUTCOMES[args.outcome], code, ""
        )
    if not stored:
        print(
            f"resolve: {args.kind} {args.resource_id} already has the outcome {row.processor_outcome}", file=sys.stderr
        )
        return 1
    print(f"{args.kind} {args.resource_id}: outcome {OUTCOMES[args.outcome]} recorded; payment_svc settles it next")
    return 0


COMMANDS: Mapping[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {
    "unresolved": (_configure_unresolved, _command(_unresolved)),
    "resolve": (_configure_resolve, _command(_resolve)),
}
