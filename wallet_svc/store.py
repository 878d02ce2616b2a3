"""wallet_svc tables and queries (SQLAlchemy Core on asyncpg).

The schema and its invariants live in migrations/versions/0002_ledger.py
(and 0004, the references of the public wallet calls);
these Table objects describe the columns the queries use. Balances are
never computed here: PostgreSQL triggers apply postings and holds to
`accounts`, and constraints reject what must never be stored.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    Row,
    String,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PaymeshError
from paymesh_runtime.money import Money
from paymesh_runtime.outbox import outbox_tables
from paymesh_runtime.sql import compiled_once
from wallet_svc import ledger
from wallet_svc.ledger import Account, AccountState, Hold, HoldState, LedgerTransaction, Posting, SystemAccount

metadata = MetaData()
outbox, outbox_sequence = outbox_tables(metadata)


def _ts(name: str, **kw: Any) -> Column[Any]:
    return Column(name, DateTime(timezone=True), server_default=func.now(), **kw)


accounts = Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", String),
    Column("system_account", String),
    Column("currency", String(3), nullable=False),
    Column("state", String, nullable=False, server_default="ACTIVE"),
    Column("state_reason", String, nullable=False, server_default=""),
    Column("posted", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    _ts("created_at"),
    _ts("updated_at"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("reference", String, nullable=False),
    Column("payment_id", String, nullable=False),
    Column("description", String, nullable=False),
    _ts("created_at"),
)

postings = Table(
    "postings",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("transaction_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger),  # set by the postings_apply trigger
    _ts("created_at"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("wallet_id", UUID(as_uuid=True), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured_amount", BigInteger, nullable=False, server_default="0"),
    Column("state", String, nullable=False, server_default="OPEN"),
    Column("reference", String, nullable=False),
    Column("payment_id", String, nullable=False),
    Column("capture_transaction_id", UUID(as_uuid=True)),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

ledger_references = Table(
    "ledger_references",
    metadata,
    Column("reference", String, primary_key=True),
    Column("operation", String, nullable=False),
    Column("fingerprint", String, nullable=False),
    Column("hold_id", UUID(as_uuid=True)),
    Column("transaction_id", UUID(as_uuid=True)),
    Column("wallet_id", UUID(as_uuid=True)),
    _ts("created_at"),
)

# Constraint (or trigger-raised) violations that mean "the request is not
# allowed", should one slip past the domain checks; anything else is a bug.
_CONSTRAINT_ERRORS: dict[str, tuple[type[PaymeshError], str, str]] = {
    "accounts_available_nonnegative": (FailedPrecondition, "INSUFFICIENT_FUNDS", "insufficient funds"),
    "accounts_frozen_no_debit_or_hold": (FailedPrecondition, "WALLET_FROZEN", "the wallet is frozen"),
    "accounts_closed_empty": (FailedPrecondition, "WALLET_CLOSED", "the wallet is closed"),
    "accounts_one_open_wallet_per_currency": (
        AlreadyExists,
        "WALLET_ALREADY_EXISTS",
        "the caller already has a wallet in this currency",
    ),
    "ledger_transactions_balanced": (
        InvalidArgument,
        "UNBALANCED_TRANSACTION",
        "postings must sum to zero per currency",
    ),
}


def constraint_of(error: IntegrityError) -> str | None:
    cause = getattr(error.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return name if isinstance(name, str) else None


def constraint_error(constraint: str | None) -> PaymeshError | None:
    """The documented reason a violated constraint stands for, if it stands for one."""
    known = _CONSTRAINT_ERRORS.get(constraint or "")
    if known is None:
        return None
    kind, reason, message = known
    return kind(reason, message)


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One database transaction; a constraint that stands for a documented
    reason becomes that PaymeshError (the transaction rolled back)."""
    try:
        async with engine.begin() as conn:
            yield conn
    except IntegrityError as error:
        known = constraint_error(constraint_of(error))
        if known is None:
            raise
        raise known from error


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, for set-based statements in the same transaction.

    SQLAlchemy opens the database transaction with the first statement it runs
    itself: run one through `conn` before using the driver connection.
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not driver.is_in_transaction():
        raise RuntimeError("run a statement through SQLAlchemy first: it opens the transaction")
    return driver


# --- row mapping ---------------------------------------------------------------


def _account(row: Row[Any]) -> Account:
    return account_of(row._mapping)


def account_of(row: Mapping[Any, Any]) -> Account:
    """An `accounts` row (SQLAlchemy's or asyncpg's) as an Account."""
    return Account(
        id=row["id"],
        owner_id=row["owner_id"],
        system_account=SystemAccount(row["system_account"]) if row["system_account"] else None,
        currency=row["currency"],
        state=AccountState(row["state"]),
        state_reason=row["state_reason"],
        posted=row["posted"],
        held=row["held"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _hold(row: Row[Any]) -> Hold:
    return Hold(
        id=row.id,
        wallet_id=row.wallet_id,
        amount=Money(row.currency, row.amount),
        captured_amount=row.captured_amount,
        state=HoldState(row.state),
        reference=row.reference,
        payment_id=row.payment_id,
        capture_transaction_id=row.capture_transaction_id,
        expire_time=row.expire_time,
        created_at=row.created_at,
    )


_POSTING_COLUMNS = (
    postings.c.seq,
    postings.c.id,
    postings.c.transaction_id,
    postings.c.account_id,
    accounts.c.system_account,
    postings.c.currency,
    postings.c.amount,
    postings.c.balance_after,
    ledger_transactions.c.payment_id,
    ledger_transactions.c.description,
    postings.c.created_at,
)
_POSTINGS_JOINED = postings.join(ledger_transactions, ledger_transactions.c.id == postings.c.transaction_id).join(
    accounts, accounts.c.id == postings.c.account_id
)


def _posting(row: Row[Any]) -> Posting:
    return Posting(
        seq=row.seq,
        id=row.id,
        transaction_id=row.transaction_id,
        account_id=row.account_id,
        system_account=SystemAccount(row.system_account) if row.system_account else None,
        amount=Money(row.currency, row.amount),
        balance_after=row.balance_after,
        payment_id=row.payment_id,
        description=row.description,
        created_at=row.created_at,
    )


# --- accounts --------------------------------------------------------------------


class SystemAccounts:
    """Ids of the per-currency system accounts, created on first use.

    Each is created in its own committed transaction, so a posting that
    rolls back never leaves a cached id without a row. The ids never change,
    so caching them is safe; their balances are never cached.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._ids: dict[ledger.SystemRef, uuid.UUID] = {}

    async def id_of(self, ref: ledger.SystemRef) -> uuid.UUID:
        if ref not in self._ids:
            self._ids[ref] = await self._ensure(ref)
        return self._ids[ref]

    async def _ensure(self, ref: ledger.SystemRef) -> uuid.UUID:
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(accounts)
                .values(id=uuid.uuid4(), system_account=ref.kind.value, currency=ref.currency)
                .on_conflict_do_nothing(
                    index_elements=["system_account", "currency"],
                    index_where=accounts.c.system_account.is_not(None),
                )
            )
            found = await conn.scalar(
                select(accounts.c.id).where(
                    accounts.c.system_account == ref.kind.value, accounts.c.currency == ref.currency
                )
            )
        assert isinstance(found, uuid.UUID)
        return found


async def insert_wallet(conn: AsyncConnection, wallet_id: uuid.UUID, owner_id: str, currency: str) -> Account | None:
    """The new wallet, or None if the owner already has an open one in this currency."""
    row = (
        await conn.execute(
            pg_insert(accounts)
            .values(id=wallet_id, owner_id=owner_id, currency=currency)
            .on_conflict_do_nothing(
                index_elements=["owner_id", "currency"],
                # Literal, not a bound parameter: the planner must match the partial index.
                index_where=text("owner_id IS NOT NULL AND state <> 'CLOSED'"),
            )
            .returning(*accounts.c)
        )
    ).first()
    return _account(row) if row else None


async def open_wallet_of(conn: AsyncConnection, owner_id: str, currency: str) -> Account | None:
    row = (
        await conn.execute(
            select(accounts).where(
                accounts.c.owner_id == owner_id, accounts.c.currency == currency, accounts.c.state != "CLOSED"
            )
        )
    ).first()
    return _account(row) if row else None


async def get_account(conn: AsyncConnection, account_id: uuid.UUID) -> Account | None:
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    return _account(row) if row else None


async def lock_accounts(conn: AsyncConnection, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Account]:
    """Row-locks the accounts in id order (one order for every transaction: no deadlock).

    FOR NO KEY UPDATE: it serialises balance changes without blocking the
    foreign-key checks of other transactions' postings.
    """
    rows = await conn.execute(
        select(accounts)
        .where(accounts.c.id.in_(sorted(set(account_ids))))
        .order_by(accounts.c.id)
        .with_for_update(key_share=True)
    )
    return {row.id: _account(row) for row in rows}


async def set_state(conn: AsyncConnection, account_id: uuid.UUID, state: AccountState, reason: str) -> Account:
    row = (
        await conn.execute(
            accounts.update()
            .where(accounts.c.id == account_id)
            .values(state=state.value, state_reason=reason, updated_at=func.now())
            .returning(*accounts.c)
        )
    ).one()
    return _account(row)


async def list_wallets(
    conn: AsyncConnection, owner_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Account]:
    query = select(accounts).where(accounts.c.owner_id == owner_id)
    if after is not None:
        query = query.where(tuple_(accounts.c.created_at, accounts.c.id) > tuple_(literal(after[0]), literal(after[1])))
    rows = await conn.execute(query.order_by(accounts.c.created_at, accounts.c.id).limit(limit))
    return [_account(row) for row in rows]


# --- references ---------------------------------------------------------------------


_REFERENCE_COLUMNS = ("reference", "operation", "fingerprint", "hold_id", "transaction_id", "wallet_id")
_CLAIM_REFERENCE = compiled_once(
    pg_insert(ledger_references)
    .values({name: bindparam(name) for name in _REFERENCE_COLUMNS})
    .on_conflict_do_nothing(index_elements=["reference"])
    .returning(ledger_references.c.reference)
)


async def claim_reference(
    conn: AsyncConnection,
    reference: str,
    operation: ledger.Operation,
    fingerprint: str,
    *,
    hold_id: uuid.UUID | None = None,
    transaction_id: uuid.UUID | None = None,
    wallet_id: uuid.UUID | None = None,
) -> ledger.StoredReference | None:
    """Claims `reference` for this call (None), or returns what an earlier call stored.

    The ids are what the call is about to produce or change (the row commits
    with the effect, or rolls back with it).

    A concurrent call with the same reference waits here on the primary key
    until the first commits (then this one replays) or rolls back (then this
    one proceeds): two calls can never both take effect.
    """
    params = {
        "reference": reference,
        "operation": operation.value,
        "fingerprint": fingerprint,
        "hold_id": hold_id,
        "transaction_id": transaction_id,
        "wallet_id": wallet_id,
    }
    claimed = await conn.scalar(_CLAIM_REFERENCE, params)
    if claimed is not None:
        return None
    # A new statement: in READ COMMITTED it sees the row the winner committed.
    row = (await conn.execute(select(ledger_references).where(ledger_references.c.reference == reference))).one()
    return stored_reference(row._mapping)


def stored_reference(row: Mapping[Any, Any]) -> ledger.StoredReference:
    """A `ledger_references` row (SQLAlchemy's or asyncpg's)."""
    return ledger.StoredReference(
        ledger.Operation(row["operation"]), row["fingerprint"], row["hold_id"], row["transaction_id"], row["wallet_id"]
    )


# --- transactions and postings ---------------------------------------------------------


@dataclass(frozen=True)
class ResolvedLeg:
    account: Account
    amount: Money


def _insert_transaction_statement() -> Any:
    """INSERT the header (a CTE) and one posting per element of the leg arrays.

    The legs travel as arrays (unnest) rather than as a multi-row VALUES, which
    SQLAlchemy cannot cache: one statement, compiled once, for any number of legs.
    """
    header = (
        insert(ledger_transactions)
        .values(
            id=bindparam("transaction_id"),
            reference=bindparam("reference"),
            payment_id=bindparam("payment_id"),
            description=bindparam("description"),
        )
        .cte("header")
    )
    leg = (
        func.unnest(
            bindparam("posting_ids", type_=ARRAY(UUID(as_uuid=True))),
            bindparam("account_ids", type_=ARRAY(UUID(as_uuid=True))),
            bindparam("currencies", type_=ARRAY(String)),
            bindparam("amounts", type_=ARRAY(BigInteger)),
        )
        .table_valued("id", "account_id", "currency", "amount", with_ordinality="n")
        .render_derived(name="leg")
    )
    rows = select(
        leg.c.id, bindparam("transaction_id", type_=UUID(as_uuid=True)), leg.c.account_id, leg.c.currency, leg.c.amount
    ).order_by(leg.c.n)
    columns = ["id", "transaction_id", "account_id", "currency", "amount"]
    return insert(postings).from_select(columns, rows).add_cte(header).returning(postings)


_INSERT_TRANSACTION = _insert_transaction_statement()


async def insert_transaction(
    conn: AsyncConnection,
    transaction_id: uuid.UUID,
    request: ledger.PostRequest | ledger.CaptureRequest,
    payment_id: str,
    legs: Sequence[ResolvedLeg],
) -> LedgerTransaction:
    """The transaction and its postings in one statement; the triggers apply them to the balances."""
    ordered = sorted(legs, key=lambda leg: leg.account.id)
    params = {
        "transaction_id": transaction_id,
        "reference": request.reference,
        "payment_id": payment_id,
        "description": request.description,
        "posting_ids": [uuid.uuid4() for _ in ordered],
        "account_ids": [leg.account.id for leg in ordered],
        "currencies": [leg.amount.currency for leg in ordered],
        "amounts": [leg.amount.amount for leg in ordered],
    }
    rows = (await conn.execute(_INSERT_TRANSACTION, params)).all()
    system = {leg.account.id: leg.account.system_account for leg in legs}
    entries = tuple(
        Posting(
            seq=row.seq,
            id=row.id,
            transaction_id=transaction_id,
            account_id=row.account_id,
            system_account=system[row.account_id],
            amount=Money(row.currency, row.amount),
            balance_after=row.balance_after,
            payment_id=payment_id,
            description=request.description,
            created_at=row.created_at,
        )
        for row in rows
    )
    return LedgerTransaction(
        transaction_id, request.reference, payment_id, request.description, entries[0].created_at, entries
    )


async def load_transaction(conn: AsyncConnection, transaction_id: uuid.UUID) -> LedgerTransaction:
    return (await load_transactions(conn, [transaction_id]))[transaction_id]


_TRANSACTION_IDS = bindparam("transaction_ids", type_=ARRAY(UUID(as_uuid=True)))


async def load_transactions(
    conn: AsyncConnection, transaction_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, LedgerTransaction]:
    """Stored transactions with their postings, by id: two statements for any number of them."""
    ids = {"transaction_ids": list(transaction_ids)}
    headers = await conn.execute(
        select(ledger_transactions).where(ledger_transactions.c.id == any_(_TRANSACTION_IDS)), ids
    )
    rows = await conn.execute(
        select(*_POSTING_COLUMNS)
        .select_from(_POSTINGS_JOINED)
        .where(postings.c.transaction_id == any_(_TRANSACTION_IDS))
        .order_by(postings.c.seq),
        ids,
    )
    legs: dict[uuid.UUID, list[Posting]] = defaultdict(list)
    for row in rows:
        legs[row.transaction_id].append(_posting(row))
    return {
        header.id: LedgerTransaction(
            header.id,
            header.reference,
            header.payment_id,
            header.description,
            header.created_at,
            tuple(legs[header.id]),
        )
        for header in headers
    }


async def list_postings(
    conn: AsyncConnection, account_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[Posting]:
    """An account's postings, newest first (by the global posting sequence)."""
    query = select(*_POSTING_COLUMNS).select_from(_POSTINGS_JOINED).where(postings.c.account_id == account_id)
    if before_seq is not None:
        query = query.where(postings.c.seq < before_seq)
    rows = await conn.execute(query.order_by(postings.c.seq.desc()).limit(limit))
    return [_posting(row) for row in rows]


# --- holds -----------------------------------------------------------------------------


async def insert_hold(conn: AsyncConnection, hold_id: uuid.UUID, request: ledger.HoldRequest, ttl_seconds: int) -> Hold:
    """The new OPEN hold; the holds_apply trigger adds it to the wallet's `held`."""
    row = (
        await conn.execute(
            insert(holds)
            .values(
                id=hold_id,
                wallet_id=request.wallet_id,
                currency=request.amount.currency,
                amount=request.amount.amount,
                reference=request.reference,
                payment_id=request.payment_id,
                expire_time=func.now() + timedelta(seconds=ttl_seconds),
            )
            .returning(*holds.c)
        )
    ).one()
    return _hold(row)


async def get_hold(conn: AsyncConnection, hold_id: uuid.UUID) -> Hold | None:
    row = (await conn.execute(select(holds).where(holds.c.id == hold_id))).first()
    return _hold(row) if row else None


async def lock_hold(conn: AsyncConnection, hold_id: uuid.UUID) -> tuple[Hold, datetime] | None:
    """Row-locks a hold; returns it with the transaction's clock for expiry checks.

    Holds are always locked before their wallet (captures, releases and the
    sweeper alike), accounts after, in id order.
    """
    row = (
        await conn.execute(
            select(holds, func.now().label("db_now")).where(holds.c.id == hold_id).with_for_update(key_share=True)
        )
    ).first()
    return (_hold(row), row.db_now) if row else None


async def finish_hold(
    conn: AsyncConnection,
    hold_id: uuid.UUID,
    state: HoldState,
    captured_amount: int = 0,
    capture_transaction_id: uuid.UUID | None = None,
) -> Hold:
    """Moves an OPEN hold to its final state; the trigger releases its full amount from `held`."""
    row = (
        await conn.execute(
            holds.update()
            .where(holds.c.id == hold_id)
            .values(
                state=state.value,
                captured_amount=captured_amount,
                capture_transaction_id=capture_transaction_id,
                updated_at=func.now(),
            )
            .returning(*holds.c)
        )
    ).one()
    return _hold(row)


async def expire_holds(conn: AsyncConnection, batch_size: int) -> int:
    """Expires up to `batch_size` OPEN holds past their expiry; returns how many.

    SKIP LOCKED: replicas sweeping at once take disjoint holds, and holds a
    capture or release is working on are left to it. The wallets are then
    locked in id order like every other writer does.
    """
    due = (
        await conn.execute(
            select(holds.c.id, holds.c.wallet_id)
            .where(holds.c.state == "OPEN", holds.c.expire_time <= func.now())
            .order_by(holds.c.expire_time)
            .limit(batch_size)
            .with_for_update(skip_locked=True, key_share=True)
        )
    ).all()
    if not due:
        return 0
    await lock_accounts(conn, (row.wallet_id for row in due))
    await conn.execute(
        holds.update()
        .where(holds.c.id.in_([row.id for row in due]))
        .values(state=HoldState.EXPIRED.value, updated_at=func.now())
    )
    return len(due)
