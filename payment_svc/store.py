"""payment_svc tables and queries (SQLAlchemy Core; the DDL with every constraint is in migrations/0002).

Queries take the caller's AsyncConnection so that a state change, its
transition row, its saga step, its outbox event and its idempotency-key
response commit in one transaction.

Work on a payment, refund or payout is guarded by a lease (lease_owner,
lease_expires_at): a replica claims the resource with a conditional UPDATE
(or FOR UPDATE SKIP LOCKED when sweeping), and every later write is
conditional on still owning it, so two replicas never work one resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from payment_svc.records import Transition
from paymesh_runtime.outbox import outbox_tables
from paymesh_runtime.sql import compiled_once

metadata = MetaData()
outbox, outbox_sequence = outbox_tables(metadata)

_UUID = UUID(as_uuid=True)
_TS = DateTime(timezone=True)


def _work_columns() -> list[Column[Any]]:
    return [
        # Why the resource entered its current state; a trigger copies it into `transitions`.
        Column("state_reason", String, nullable=False, server_default=""),
        Column("lease_owner", String),
        Column("lease_expires_at", _TS),
        Column("next_attempt_at", _TS, nullable=False, server_default=func.now()),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("create_time", _TS, nullable=False, server_default=func.now()),
        Column("update_time", _TS, nullable=False, server_default=func.now()),
    ]


payments = Table(
    "payments",
    metadata,
    Column("payment_id", _UUID, primary_key=True),
    Column("payer_id", String, nullable=False),
    Column("payee_id", String, nullable=False),
    Column("source_wallet_id", String),
    Column("card_token", String),
    Column("destination_wallet_id", String, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("amount_captured", BigInteger, nullable=False, server_default="0"),
    Column("refund_reserved", BigInteger, nullable=False, server_default="0"),
    Column("amount_refunded", BigInteger, nullable=False, server_default="0"),
    Column("capture_method", String, nullable=False),
    Column("capture_requested", BigInteger),
    Column("state", String, nullable=False),
    Column("description", String, nullable=False, server_default=""),
    Column("failure_code", String, nullable=False, server_default=""),
    Column("failure_message", String, nullable=False, server_default=""),
    Column("capture_before", _TS),
    Column("hold_id", String),
    Column("authorization_ref", String),
    Column("requested_action", String),
    Column("action_reason", String, nullable=False, server_default=""),
    *_work_columns(),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", _UUID, primary_key=True),
    Column("payment_id", _UUID, nullable=False),
    Column("requested_by", String, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", String, nullable=False, server_default=""),
    Column("state", String, nullable=False),
    Column("failure_code", String, nullable=False, server_default=""),
    Column("processor_ref", String),
    # PENDING while the processor settles the refund; SUCCEEDED or DECLINED from its webhook.
    Column("processor_outcome", String),
    Column("processor_decline_code", String, nullable=False, server_default=""),
    *_work_columns(),
)

payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", _UUID, primary_key=True),
    Column("wallet_id", String, nullable=False),
    Column("owner_id", String, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("bank_account_token", String, nullable=False),
    Column("state", String, nullable=False),
    Column("failure_code", String, nullable=False, server_default=""),
    Column("hold_id", String),
    Column("processor_ref", String),
    Column("processor_outcome", String),
    Column("processor_decline_code", String, nullable=False, server_default=""),
    *_work_columns(),
)

transitions = Table(
    "transitions",
    metadata,
    Column("transition_id", BigInteger, primary_key=True, autoincrement=True),
    Column("resource_type", String, nullable=False),
    Column("resource_id", _UUID, nullable=False),
    Column("from_state", String, nullable=False),
    Column("to_state", String, nullable=False),
    Column("reason", String, nullable=False, server_default=""),
    Column("time", _TS, nullable=False, server_default=func.now()),
)

saga_steps = Table(
    "saga_steps",
    metadata,
    Column("resource_id", _UUID, primary_key=True),
    Column("step", String, primary_key=True),
    Column("reference", String, nullable=False, unique=True),
    Column("status", String, nullable=False),
    Column("result_ref", String, nullable=False, server_default=""),
    Column("detail", String, nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="1"),
    # The replica (lease owner) that last started the step.
    Column("worker", String, nullable=False, server_default=""),
    # The call may have acted at the processor without paymesh learning the result (migration 0006).
    Column("outcome_unknown", Boolean, nullable=False, server_default="false"),
    Column("started_at", _TS, nullable=False, server_default=func.now()),
    Column("updated_at", _TS, nullable=False, server_default=func.now()),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller_id", String, primary_key=True),
    Column("idempotency_key", String, primary_key=True),
    Column("method", String, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("resource_id", _UUID, nullable=False),
    Column("state", String, nullable=False),
    Column("response_code", Integer),
    Column("response_body", LargeBinary),
    Column("created_at", _TS, nullable=False, server_default=func.now()),
    Column("completed_at", _TS),
    Column("expires_at", _TS, nullable=False),
)

webhook_events = Table(
    "processor_webhook_events",
    metadata,
    Column("processor", String, primary_key=True),
    Column("event_id", String, primary_key=True),
    Column("event_type", String, nullable=False),
    Column("processor_ref", String, nullable=False),
    Column("received_at", _TS, nullable=False, server_default=func.now()),
)

# The resource tables that carry the work columns, with their id column.
WORKED: dict[str, tuple[Table, Column[Any]]] = {
    "payment": (payments, payments.c.payment_id),
    "refund": (refunds, refunds.c.refund_id),
    "payout": (payouts, payouts.c.payout_id),
}

AnyRow = Row[Any]


# --- reads ----------------------------------------------------------------------------


async def get_row(
    conn: AsyncConnection, kind: str, resource_id: uuid.UUID, *, for_update: bool = False
) -> AnyRow | None:
    table, id_column = WORKED[kind]
    query = select(table).where(id_column == resource_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def transitions_of(conn: AsyncConnection, resource_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Transition]]:
    """Each resource's transitions, oldest first."""
    found: dict[uuid.UUID, list[Transition]] = {rid: [] for rid in resource_ids}
    if not resource_ids:
        return found
    t = transitions
    rows = await conn.execute(
        select(t).where(t.c.resource_id.in_(list(resource_ids))).order_by(t.c.resource_id, t.c.transition_id)
    )
    for row in rows:
        found[row.resource_id].append(Transition(row.from_state, row.to_state, row.reason, row.time))
    return found


async def list_payments(
    conn: AsyncConnection, viewer_id: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[AnyRow]:
    """Newest first; `viewer_id` None lists everything (admins)."""
    p = payments
    query = select(p).order_by(p.c.create_time.desc(), p.c.payment_id.desc()).limit(limit)
    if viewer_id is not None:
        query = query.where(or_(p.c.payer_id == viewer_id, p.c.payee_id == viewer_id))
    if after is not None:
        query = query.where(tuple_(p.c.create_time, p.c.payment_id) < tuple_(literal(after[0]), literal(after[1])))
    return list((await conn.execute(query)).all())


async def list_refunds(
    conn: AsyncConnection, payment_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[AnyRow]:
    r = refunds
    query = select(r).where(r.c.payment_id == payment_id).order_by(r.c.create_time, r.c.refund_id).limit(limit)
    if after is not None:
        query = query.where(tuple_(r.c.create_time, r.c.refund_id) > tuple_(literal(after[0]), literal(after[1])))
    return list((await conn.execute(query)).all())


async def by_processor_ref(conn: AsyncConnection, kind: str, processor_ref: str) -> AnyRow | None:
    """The refund or payout the processor knows as `processor_ref`."""
    table, _ = WORKED[kind]
    return (await conn.execute(select(table).where(table.c.processor_ref == processor_ref))).first()


async def by_step_reference(conn: AsyncConnection, kind: str, reference: str) -> AnyRow | None:
    """The refund or payout whose saga step made the processor call with idempotency key `reference`."""
    table, id_column = WORKED[kind]
    step = select(saga_steps.c.resource_id).where(saga_steps.c.reference == reference).scalar_subquery()
    return (await conn.execute(select(table).where(id_column == step))).first()


async def store_processor_outcome(
    conn: AsyncConnection, kind: str, resource_id: uuid.UUID, outcome: str, decline_code: str, processor_ref: str
) -> bool:
    """Records a final outcome the processor reported (webhook or poll), once; True if this call stored it.

    Only where none is stored yet or the refund waits for it; the processor's
    reference is kept if paymesh never learned it (the call's answer was
    lost). The resource is due for the recovery worker at once.
    """
    table, id_column = WORKED[kind]
    waiting = or_(table.c.processor_outcome.is_(None), table.c.processor_outcome == "PENDING")
    row = (
        await conn.execute(
            table.update()
            .where(id_column == resource_id, waiting)
            .values(
                processor_outcome=outcome,
                processor_decline_code=decline_code,
                processor_ref=func.coalesce(table.c.processor_ref, processor_ref or None),
                next_attempt_at=func.now(),
            )
            .returning(id_column)
        )
    ).first()
    return row is not None


# --- writes ---------------------------------------------------------------------------


async def insert_resource(conn: AsyncConnection, kind: str, values: dict[str, Any]) -> tuple[AnyRow, Transition]:
    """Inserts a payment, refund or payout; returns its row and its first transition (from '', "created")."""
    table, _ = WORKED[kind]
    row = (await conn.execute(table.insert().values(state_reason="created", **values).returning(table))).one()
    return row, Transition("", row.state, row.state_reason, row.create_time)


async def move(
    conn: AsyncConnection,
    kind: str,
    resource_id: uuid.UUID,
    *,
    owner: str,
    from_state: str,
    to_state: str,
    reason: str,
    values: dict[str, Any] | None = None,
) -> tuple[AnyRow, Transition] | None:
    """Moves a leased resource from `from_state` to another state; returns (its row, the transition),
    or None if the state or the lease moved on. The database records the transition itself."""
    table, id_column = WORKED[kind]
    row = (
        await conn.execute(
            table.update()
            .where(id_column == resource_id, table.c.state == from_state, table.c.lease_owner == owner)
            .values(state=to_state, state_reason=reason, update_time=func.now(), **(values or {}))
            .returning(table)
        )
    ).first()
    if row is None:
        return None
    return row, Transition(from_state, to_state, reason, row.update_time)


async def update_leased(
    conn: AsyncConnection, kind: str, resource_id: uuid.UUID, owner: str, values: dict[str, Any]
) -> AnyRow | None:
    table, id_column = WORKED[kind]
    return (
        await conn.execute(
            table.update()
            .where(id_column == resource_id, table.c.lease_owner == owner)
            .values(update_time=func.now(), **values)
            .returning(table)
        )
    ).first()


# --- leases ---------------------------------------------------------------------------


async def claim(
    conn: AsyncConnection, kind: str, resource_id: uuid.UUID, owner: str, lease: timedelta, *, renew: bool = False
) -> AnyRow | None:
    """Takes the lease on one resource, or with `renew` extends the caller's own; None if someone holds it.

    Taking needs a free (or lapsed) lease even when `owner` holds it: a lease
    held by this very replica means one of its tasks works on the resource.
    """
    table, id_column = WORKED[kind]
    free = or_(table.c.lease_owner.is_(None), table.c.lease_expires_at < func.now())
    if renew:
        free = or_(free, table.c.lease_owner == owner)
    return (
        await conn.execute(
            table.update()
            .where(id_column == resource_id, free)
            .values(lease_owner=owner, lease_expires_at=func.now() + lease)
            .returning(table)
        )
    ).first()


async def release(
    conn: AsyncConnection, kind: str, resource_id: uuid.UUID, owner: str, retry_after: timedelta | None = None
) -> None:
    """Gives the lease up; with `retry_after` the recovery worker tries again after that delay."""
    table, id_column = WORKED[kind]
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if retry_after is not None:
        values.update(next_attempt_at=func.now() + retry_after, attempts=table.c.attempts + 1)
    await conn.execute(table.update().where(id_column == resource_id, table.c.lease_owner == owner).values(**values))


async def release_earlier_incarnations(conn: AsyncConnection, replica: str, owner: str) -> int:
    """Gives back every lease a dead earlier incarnation of `replica` held, due now; returns how many."""
    released = 0
    for table, _ in WORKED.values():
        result = await conn.execute(
            table.update()
            .where(
                table.c.lease_owner.is_not(None),
                func.split_part(table.c.lease_owner, "#", 1) == replica,
                table.c.lease_owner != owner,
            )
            .values(lease_owner=None, lease_expires_at=None, next_attempt_at=func.now())
        )
        released += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return released


def _needs_work(kind: str) -> Any:
    """Unfinished; due at next_attempt_at. A payout PROCESSING or a refund the processor is settling
    waits for its webhook until then, and is polled when it has not come."""
    if kind == "payment":
        p = payments
        return or_(p.c.state.in_(["PENDING", "PROCESSING"]), p.c.requested_action.is_not(None))
    if kind == "refund":
        return refunds.c.state == "PENDING"
    return payouts.c.state.in_(["PENDING", "PROCESSING"])


def _awaiting_processor(kind: str) -> Any:
    if kind == "refund":
        return and_(refunds.c.state == "PENDING", refunds.c.processor_outcome == "PENDING")
    if kind == "payout":
        return and_(payouts.c.state == "PROCESSING", payouts.c.processor_outcome.is_(None))
    return None


@dataclass(frozen=True)
class Backlog:
    """Work of one kind that is not finished, for the operators' gauges."""

    unfinished: int
    retrying: int  # unfinished and interrupted at least `retrying_after` times
    awaiting_processor_seconds: float  # age of the oldest one waiting for the processor's webhook


async def backlog(conn: AsyncConnection, kind: str, retrying_after: int) -> Backlog:
    table, _ = WORKED[kind]
    counts = (
        await conn.execute(
            select(func.count(), func.count().filter(table.c.attempts >= retrying_after)).where(_needs_work(kind))
        )
    ).one()
    waiting = _awaiting_processor(kind)
    age = 0.0
    if waiting is not None:
        oldest = await conn.scalar(
            select(func.extract("epoch", func.now() - func.min(table.c.update_time))).where(waiting)
        )
        age = float(oldest or 0)
    return Backlog(counts[0], counts[1], age)


async def claim_due(conn: AsyncConnection, kind: str, owner: str, lease: timedelta, limit: int) -> list[uuid.UUID]:
    """Leases unfinished resources nobody works on; SKIP LOCKED keeps replicas off each other's rows."""
    table, id_column = WORKED[kind]
    due = (
        select(id_column)
        # Never our own live leases: this replica's request handlers may be working those right now.
        .where(
            _needs_work(kind),
            table.c.next_attempt_at <= func.now(),
            or_(table.c.lease_owner.is_(None), table.c.lease_expires_at < func.now()),
        )
        .order_by(table.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = await conn.execute(
        table.update()
        .where(id_column.in_(due))
        .values(lease_owner=owner, lease_expires_at=func.now() + lease)
        .returning(id_column)
    )
    return list(rows.scalars())


async def request_expiry_cancels(conn: AsyncConnection, limit: int) -> list[uuid.UUID]:
    """Marks uncaptured authorizations past capture_before for cancellation by the saga."""
    p = payments
    due = (
        select(p.c.payment_id)
        .where(p.c.state == "REQUIRES_CAPTURE", p.c.capture_before < func.now(), p.c.requested_action.is_(None))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = await conn.execute(
        p.update()
        .where(p.c.payment_id.in_(due))
        .values(requested_action="CANCEL", action_reason="authorization_expired", next_attempt_at=func.now())
        .returning(p.c.payment_id)
    )
    return list(rows.scalars())


# --- saga steps -----------------------------------------------------------------------


async def get_step(conn: AsyncConnection, resource_id: uuid.UUID, step: str) -> AnyRow | None:
    s = saga_steps
    return (await conn.execute(select(s).where(s.c.resource_id == resource_id, s.c.step == step))).first()


def _start_step_statement() -> Any:
    s = saga_steps
    statement = insert(s).values(
        resource_id=bindparam("resource_id"),
        step=bindparam("step"),
        reference=bindparam("reference"),
        status="STARTED",
        worker=bindparam("worker"),
    )
    return compiled_once(
        statement.on_conflict_do_update(
            index_elements=[s.c.resource_id, s.c.step],
            set_={
                "attempts": s.c.attempts + 1,
                "worker": statement.excluded.worker,
                "updated_at": func.now(),
                # Still STARTED: an earlier attempt's call may have acted without its result being stored.
                "outcome_unknown": or_(s.c.outcome_unknown, s.c.status == "STARTED"),
            },
        ).returning(s.c.outcome_unknown)
    )


_START_STEP = _start_step_statement()


async def start_step(conn: AsyncConnection, resource_id: uuid.UUID, step: str, reference: str, worker: str) -> bool:
    """Records that `worker` is about to make a step's external call (again); True if an earlier
    attempt of the step may have acted without its result being known."""
    params = {"resource_id": resource_id, "step": step, "reference": reference, "worker": worker}
    return bool((await conn.execute(_START_STEP, params)).scalar_one())


@dataclass(frozen=True)
class UnresolvedStep:
    """A processor step whose outcome is unknown, on a resource that is not finished."""

    kind: str
    resource_id: uuid.UUID
    state: str
    step: str
    reference: str
    attempts: int
    started_at: datetime


async def unresolved_steps(conn: AsyncConnection) -> list[UnresolvedStep]:
    s = saga_steps
    found: list[UnresolvedStep] = []
    for kind, (table, id_column) in WORKED.items():
        rows = await conn.execute(
            select(table.c.state, s)
            .join(table, id_column == s.c.resource_id)
            .where(
                s.c.outcome_unknown, s.c.status == "STARTED", table.c.state.not_in(["SUCCEEDED", "FAILED", "CANCELED"])
            )
            .order_by(s.c.started_at)
        )
        found += [
            UnresolvedStep(kind, row.resource_id, row.state, row.step, row.reference, row.attempts, row.started_at)
            for row in rows
        ]
    return found


async def close_started_step(
    conn: AsyncConnection, resource_id: uuid.UUID, step: str, status: str, result_ref: str
) -> None:
    """Closes a step still STARTED with an outcome learned another way (the processor's webhook or a poll)."""
    s = saga_steps
    await conn.execute(
        s.update()
        .where(s.c.resource_id == resource_id, s.c.step == step, s.c.status == "STARTED")
        .values(status=status, result_ref=result_ref, detail="reported by the processor", updated_at=func.now())
    )


async def mark_outcome_unknown(conn: AsyncConnection, resource_id: uuid.UUID, step: str) -> None:
    s = saga_steps
    await conn.execute(s.update().where(s.c.resource_id == resource_id, s.c.step == step).values(outcome_unknown=True))


async def finish_step(
    conn: AsyncConnection, resource_id: uuid.UUID, step: str, status: str, result_ref: str = "", detail: str = ""
) -> None:
    s = saga_steps
    await conn.execute(
        s.update()
        .where(s.c.resource_id == resource_id, s.c.step == step)
        .values(status=status, result_ref=result_ref, detail=detail, updated_at=func.now())
    )


# --- refunds against a payment ----------------------------------------------------------


async def reserve_refund(conn: AsyncConnection, payment_id: uuid.UUID, amount: int) -> bool:
    """Adds `amount` to the payment's reserved refunds unless that passes the captured amount."""
    p = payments
    row = (
        await conn.execute(
            p.update()
            .where(
                p.c.payment_id == payment_id,
                p.c.state == "SUCCEEDED",
                p.c.refund_reserved + amount <= p.c.amount_captured,
            )
            .values(refund_reserved=p.c.refund_reserved + amount, update_time=func.now())
            .returning(p.c.payment_id)
        )
    ).first()
    return row is not None


async def settle_refund(conn: AsyncConnection, payment_id: uuid.UUID, amount: int, *, succeeded: bool) -> None:
    """A refund ended: count it as refunded, or give its reservation back."""
    p = payments
    values = (
        {"amount_refunded": p.c.amount_refunded + amount}
        if succeeded
        else {"refund_reserved": p.c.refund_reserved - amount}
    )
    await conn.execute(p.update().where(p.c.payment_id == payment_id).values(update_time=func.now(), **values))


# --- webhooks -------------------------------------------------------------------------


async def record_webhook_event(
    conn: AsyncConnection, processor: str, event_id: str, event_type: str, processor_ref: str
) -> bool:
    """True the first time an event id is seen; False for a redelivery."""
    row = (
        await conn.execute(
            insert(webhook_events)
            .values(processor=processor, event_id=event_id, event_type=event_type, processor_ref=processor_ref)
            .on_conflict_do_nothing()
            .returning(webhook_events.c.event_id)
        )
    ).first()
    return row is not None
