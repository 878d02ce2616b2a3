"""What every flow of the saga shares: the step log, leases, interruptions.

A flow (payments, refunds, payouts) advances one leased resource at a time.
Each external call is a step written STARTED (and the lease renewed) before
the call, with the deterministic reference `<resource id>:<step>`; the flow
commits the step's result together with the state change it causes. A call
without a definitive answer raises Interrupted: the lease is given back with
a growing delay and the recovery worker drives the resource again later.

Processor steps that move money go through `processor_step`: a call that may
have acted without an answer marks the step outcome_unknown, and every later
attempt first asks the processor what happened (docs/payments.md, "Unknown
processor outcomes"). `poll` asks about a resource whose webhook is late.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_svc import store
from payment_svc.idempotency import OK, Recorded
from payment_svc.processor import (
    Outcome,
    Processor,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorUnavailable,
)
from payment_svc.records import Transition
from payment_svc.store import AnyRow
from paymesh_runtime.errors import Aborted, PaymeshError, Unavailable
from paymesh_runtime.grpc_errors import status_for

log = logging.getLogger(__name__)
T = TypeVar("T")


class Interrupted(Exception):
    """A step got no definitive answer; the recovery worker resumes the resource later."""

    def __init__(self, error: PaymeshError) -> None:
        super().__init__(error.message)
        self.error = error


class LeaseLost(Exception):
    """Another replica took the resource over (this one was too slow); stop touching it."""


def dependency_unavailable(what: str) -> Unavailable:
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE",
        f"{what} did not answer; the operation continues in the background, retry with the same idempotency key",
    )


def processor_unavailable(processor: str, resource_id: uuid.UUID) -> Unavailable:
    return Unavailable(
        "PROCESSOR_UNAVAILABLE",
        "the payment processor is unavailable; nothing was charged",
        metadata={"processor": processor, "resource_id": str(resource_id)},
    )


@dataclass(frozen=True)
class SagaConfig:
    worker_id: str
    lease: timedelta
    capture_window: timedelta
    automatic_hold_ttl_seconds: int
    payout_hold_ttl_seconds: int
    retry_backoff: timedelta
    max_retry_backoff: timedelta
    # How long a payout or refund the processor settles later waits for its webhook before it is polled.
    processor_poll: timedelta = timedelta(minutes=5)
    crash_after_step: str = ""


@dataclass(frozen=True)
class Driven:
    """Where a drive left a resource: its message, and the error its creating call answers with, if any."""

    message: Any
    error: PaymeshError | None = None
    # The last commit of the drive already gave the lease back.
    lease_released: bool = False


def recorded_response(message: Any, error: PaymeshError | None) -> Recorded:
    """What an idempotency key replays: the message, or the error the creating call answered with."""
    if error is None:
        return Recorded(OK, message.SerializeToString())
    status = status_for(error)
    return Recorded(status.code, status.SerializeToString())


def kill_this_process(step: str) -> None:
    log.warning("PAYMENT_CRASH_AFTER_STEP=%s: killing this process with SIGKILL", step)
    os.kill(os.getpid(), signal.SIGKILL)


class Steps:
    """The step log and the leases of payments, refunds and payouts."""

    def __init__(
        self,
        engine: AsyncEngine,
        processor: Processor,
        config: SagaConfig,
        crash: Callable[[str], None] = kill_this_process,
    ) -> None:
        self.engine = engine
        self.config = config
        self._processor = processor
        self._crash = crash

    @property
    def owner(self) -> str:
        return self.config.worker_id

    def lease_values(self) -> dict[str, Any]:
        """Columns that lease a new resource to this replica (it starts working on it at once)."""
        return {"lease_owner": self.owner, "lease_expires_at": func.now() + self.config.lease}

    async def load(self, kind: str, resource_id: uuid.UUID) -> AnyRow:
        async with self.engine.connect() as conn:
            row = await store.get_row(conn, kind, resource_id)
        if row is None:
            raise LookupError(f"{kind} {resource_id} vanished")
        return row

    async def of(self, resource_id: uuid.UUID) -> dict[str, AnyRow]:
        """The steps recorded for a resource, by name."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(store.saga_steps.select().where(store.saga_steps.c.resource_id == resource_id))
            return {row.step: row for row in rows}

    async def run(
        self,
        kind: str,
        resource_id: uuid.UUID,
        step: str,
        call: Callable[[str], Awaitable[T]],
        *,
        started: bool = False,
    ) -> T:
        """Renews the lease, records the step STARTED, then makes its call with the step's reference.

        `started`: the last commit already recorded the step and renewed the lease (no transaction needed).
        """
        reference = f"{resource_id}:{step}"
        if not started:
            async with self.engine.begin() as conn:
                await self._renew(conn, kind, resource_id)
                await store.start_step(conn, resource_id, step, reference, self.owner)
        self._crash_at(f"{step}:started")
        result = await call(reference)
        self._crash_at(f"{step}:called")
        return result

    async def processor_step(
        self,
        kind: str,
        resource_id: uuid.UUID,
        step: str,
        call: Callable[[str], Awaitable[ProcessorResult]],
        find: Callable[[str], Awaitable[ProcessorResult | None]],
        *,
        started: bool = False,
        fail_fast: bool = False,
    ) -> ProcessorResult:
        """A processor call that may move money, made so that an unknown outcome is never taken for a failure.

        If an earlier attempt of the step may have acted (the step is marked
        outcome_unknown, or was left STARTED), the processor is asked first
        (`find` by the step's reference) and what it found is the answer; only
        if it shows no effect is the call repeated, with the same key. A call
        that may have acted without a definite answer marks the step
        outcome_unknown, for every later attempt and across restarts, and
        raises Interrupted: the recovery worker asks again later.

        An unavailable processor (down, breaker open) raises Interrupted too,
        unless `fail_fast` and nothing of this step can have reached the
        processor: then ProcessorUnavailable, and the flow may give up.
        ProcessorRejected passes through: the processor refused the request.
        """
        reference = f"{resource_id}:{step}"
        unknown = False
        if not started:
            async with self.engine.begin() as conn:
                await self._renew(conn, kind, resource_id)
                unknown = await store.start_step(conn, resource_id, step, reference, self.owner)
        self._crash_at(f"{step}:started")
        try:
            result = await self._ask(kind, resource_id, reference, find) if unknown else None
            if result is None:
                result = await call(reference)
        except ProcessorRejected:
            raise
        except ProcessorError as error:
            if error.may_have_acted and not unknown:
                async with self.engine.begin() as conn:
                    await store.mark_outcome_unknown(conn, resource_id, step)
                log.warning(
                    "%s %s: outcome of %s unknown (%s); asking the processor later",
                    kind,
                    resource_id,
                    step,
                    error.message,
                )
            if unknown or error.may_have_acted:
                raise Interrupted(dependency_unavailable("the payment processor")) from error
            if fail_fast and isinstance(error, ProcessorUnavailable):
                raise
            raise Interrupted(processor_unavailable(self._processor.name, resource_id)) from error
        self._crash_at(f"{step}:called")
        return result

    async def poll(
        self,
        kind: str,
        resource_id: uuid.UUID,
        step: str,
        find: Callable[[str], Awaitable[ProcessorResult | None]],
    ) -> bool:
        """Asks the processor about a resource whose webhook has not come (the processor accepted
        `step` as pending). Stores a final outcome and returns True, or schedules the next poll."""
        try:
            found = await find(f"{resource_id}:{step}")
        except ProcessorError as error:
            raise Interrupted(dependency_unavailable("the payment processor")) from error
        async with self.engine.begin() as conn:
            if found is not None and found.outcome is not Outcome.PENDING:
                await store.store_processor_outcome(
                    conn, kind, resource_id, found.outcome.value, found.decline_code, found.processor_ref
                )
                return True
            if found is None:
                log.warning("%s %s: the processor does not know the %s it accepted", kind, resource_id, step)
            later = {"next_attempt_at": func.now() + self.config.processor_poll}
            if await store.update_leased(conn, kind, resource_id, self.owner, later) is None:
                raise LeaseLost(f"{kind} {resource_id}")
        return False

    def recheck_later(self) -> dict[str, Any]:
        """Columns that make a resource resting at the processor due for a poll after `processor_poll`."""
        return {"next_attempt_at": func.now() + self.config.processor_poll}

    async def _ask(
        self,
        kind: str,
        resource_id: uuid.UUID,
        reference: str,
        find: Callable[[str], Awaitable[ProcessorResult | None]],
    ) -> ProcessorResult | None:
        """What an earlier attempt did; None if the processor shows no effect (the lease renewed for the repeat)."""
        try:
            found = await find(reference)
        except ProcessorRejected as error:
            # Our question was refused: a bug or a configuration error, not an answer. Keep asking.
            log.error("%s %s: the processor refused the lookup of %s: %s", kind, resource_id, reference, error.message)
            raise Interrupted(dependency_unavailable("the payment processor")) from error
        if found is not None:
            log.info("%s %s: the processor reports %s for %s", kind, resource_id, found.outcome.value, reference)
            return found
        async with self.engine.begin() as conn:
            await self._renew(conn, kind, resource_id)
        return None

    async def _renew(self, conn: AsyncConnection, kind: str, resource_id: uuid.UUID) -> None:
        if await store.claim(conn, kind, resource_id, self.owner, self.config.lease, renew=True) is None:
            raise LeaseLost(f"{kind} {resource_id}")

    async def write_result(
        self,
        conn: AsyncConnection,
        kind: str,
        row: AnyRow,
        resource_id: uuid.UUID,
        *,
        step: str | None,
        status: str,
        result_ref: str,
        to_state: str | None,
        reason: str,
        values: dict[str, Any],
        check_transition: Callable[[str, str], None],
    ) -> tuple[AnyRow, Transition | None]:
        """In the caller's transaction: a step's result, and the state change it causes (checked
        against the lifecycle) or other values, under this replica's lease. Returns the updated row and
        the transition row (None without a state change); LeaseLost if another replica took over."""
        if step is not None:
            await store.finish_step(conn, resource_id, step, status, result_ref, reason)
        moved: tuple[AnyRow, Transition | None] | None
        if to_state is None or to_state == row.state:
            updated = await store.update_leased(conn, kind, resource_id, self.owner, values)
            moved = None if updated is None else (updated, None)
        else:
            check_transition(row.state, to_state)
            moved = await store.move(
                conn, kind, resource_id, owner=self.owner, from_state=row.state, to_state=to_state,
                reason=reason, values=values,
            )  # fmt: skip
        if moved is None:
            raise LeaseLost(f"{kind} {resource_id}")
        return moved

    def after_commit(self, step: str | None, status: str) -> None:
        """Crash tests: dies right after the configured step's result committed."""
        if step and status == "DONE":
            self._crash_at(step)

    def _crash_at(self, point: str) -> None:
        if point == self.config.crash_after_step:
            self._crash(point)

    async def claim_locked(self, conn: AsyncConnection, kind: str, resource_id: uuid.UUID) -> None:
        """Takes the lease of a row the caller has locked; ABORTED if another call (here or on another
        replica) works on it."""
        if await store.claim(conn, kind, resource_id, self.owner, self.config.lease) is None:
            raise Aborted(
                "PAYMENT_IN_PROGRESS",
                f"another operation on {kind} {resource_id} is running; retry shortly",
                metadata={"resource_id": str(resource_id)},
            )

    async def claim(self, kind: str, resource_id: uuid.UUID) -> bool:
        async with self.engine.begin() as conn:
            return await store.claim(conn, kind, resource_id, self.owner, self.config.lease) is not None

    async def drive(
        self, kind: str, resource_id: uuid.UUID, advance: Callable[[uuid.UUID], Awaitable[Driven]]
    ) -> Driven:
        """Advances a leased resource, then gives the lease back (after an interruption, with a delay)."""
        try:
            driven = await advance(resource_id)
        except LeaseLost:
            raise Interrupted(dependency_unavailable("this replica's lease lapsed; another replica")) from None
        except Exception:
            row = await self.load(kind, resource_id)
            await self._release(kind, resource_id, row.attempts, interrupted=True)
            raise
        if not driven.lease_released:
            await self._release(kind, resource_id, 0, interrupted=False)
        return driven

    async def _release(self, kind: str, resource_id: uuid.UUID, attempts: int, *, interrupted: bool) -> None:
        """Gives the lease back; after an interruption with a growing delay before the next attempt."""
        delay = None
        if interrupted:
            base = self.config.retry_backoff.total_seconds()
            delay = timedelta(seconds=min(base * 2 ** min(attempts, 16), self.config.max_retry_backoff.total_seconds()))
        async with self.engine.begin() as conn:
            await store.release(conn, kind, resource_id, self.owner, delay)
