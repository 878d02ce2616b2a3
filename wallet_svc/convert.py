"""Domain objects to paymesh.wallet.v1 messages (shared by the handlers and the events)."""

from __future__ import annotations

from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.grpc_errors import status_for
from paymesh_runtime.money import Money
from paymesh_runtime.wire import money_message, timestamp
from wallet_svc.batch import PostOutcome
from wallet_svc.ledger import Account, Hold, LedgerTransaction, Posting


def wallet(account: Account) -> wallet_pb2.Wallet:
    return wallet_pb2.Wallet(
        wallet_id=str(account.id),
        owner_id=account.owner_id or "",
        currency=account.currency,
        state=account.state.value,
        posted_balance=money_message(Money(account.currency, account.posted)),
        held_balance=money_message(Money(account.currency, account.held)),
        available_balance=money_message(Money(account.currency, account.available)),
        create_time=timestamp(account.created_at),
        update_time=timestamp(account.updated_at),
    )


def entry(posting: Posting) -> wallet_pb2.Entry:
    return wallet_pb2.Entry(
        entry_id=str(posting.id),
        wallet_id=str(posting.account_id),
        transaction_id=str(posting.transaction_id),
        payment_id=posting.payment_id,
        amount=money_message(posting.amount),
        balance_after=money_message(Money(posting.amount.currency, posting.balance_after)),
        description=posting.description,
        create_time=timestamp(posting.created_at),
    )


def account_ref(posting: Posting) -> wallet_pb2.AccountRef:
    if posting.system_account is not None:
        return wallet_pb2.AccountRef(system_account=posting.system_account.value)
    return wallet_pb2.AccountRef(wallet_id=str(posting.account_id))


def transaction(tx: LedgerTransaction) -> wallet_pb2.LedgerTransaction:
    return wallet_pb2.LedgerTransaction(
        transaction_id=str(tx.id),
        reference=tx.reference,
        payment_id=tx.payment_id,
        postings=[wallet_pb2.Posting(account=account_ref(p), amount=money_message(p.amount)) for p in tx.postings],
        description=tx.description,
        create_time=timestamp(tx.created_at),
    )


def hold(value: Hold) -> wallet_pb2.Hold:
    return wallet_pb2.Hold(
        hold_id=str(value.id),
        wallet_id=str(value.wallet_id),
        amount=money_message(value.amount),
        captured_amount=money_message(Money(value.amount.currency, value.captured_amount)),
        state=value.state.value,
        reference=value.reference,
        payment_id=value.payment_id,
        expire_time=timestamp(value.expire_time),
        create_time=timestamp(value.created_at),
    )


def post_result(outcome: PostOutcome) -> wallet_pb2.PostTransactionResult:
    """One PostTransactions item; a refusal carries the status PostTransaction would have answered."""
    if outcome.error is not None:
        return wallet_pb2.PostTransactionResult(error=status_for(outcome.error))
    assert outcome.transaction is not None
    return wallet_pb2.PostTransactionResult(transaction=transaction(outcome.transaction), replayed=outcome.replayed)
