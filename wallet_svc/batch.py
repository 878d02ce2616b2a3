"""Batched postings (PostTransactions): every item judged in request order, without I/O.

A batch is applied in one database transaction, but each item is judged as if
its own PostTransaction ran right after the items before it: on the balances
they left, and with the references they claimed. `decide` does that on the
accounts locked for the batch and says, per item, what to store (`Post`),
which earlier transaction to answer (`Replay`) or why not (`Refuse`). The
checks are PostTransaction's own (wallet_svc.ledger), so an item is refused
with the very error the single call would have raised. `settle_claims` says
which of the references claimed before judging must be given back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money
from wallet_svc import ledger
from wallet_svc.ledger import Account, AccountKey, LedgerTransaction, Operation, PostRequest, StoredReference

# The most transactions one PostTransactions call may carry (at MAX_LEGS each,
# 16,000 postings: one call stays well inside gRPC's 4 MiB message limit).
MAX_TRANSACTIONS = 1000


@dataclass(frozen=True)
class PlannedPosting:
    """One leg of a transaction to store, with the balance it must leave."""

    account: Account  # with this leg applied (owner, state and held never change within a batch)
    amount: Money
    balance_after: int  # the account's posted balance right after this leg


@dataclass(frozen=True)
class Post:
    """Store a new transaction (and claim its reference)."""

    transaction_id: uuid.UUID
    request: PostRequest
    fingerprint: str
    postings: tuple[PlannedPosting, ...]  # in account id order, as PostTransaction stores them


@dataclass(frozen=True)
class Replay:
    """The reference already posted this very transaction: answer the stored one."""

    transaction_id: uuid.UUID


@dataclass(frozen=True)
class Refuse:
    """Nothing is stored for the item (its reference stays free)."""

    error: PaymeshError


Decision = Post | Replay | Refuse


@dataclass(frozen=True)
class PostOutcome:
    """One item's answer: the transaction (posted now or replayed) or the refusal."""

    transaction: LedgerTransaction | None = None
    error: PaymeshError | None = None
    replayed: bool = False


def decide(
    requests: Sequence[PostRequest],
    fingerprints: Sequence[str],
    stored: Mapping[str, StoredReference],
    ids: Mapping[AccountKey, uuid.UUID],
    locked: Mapping[uuid.UUID, Account],
    transaction_ids: Mapping[str, uuid.UUID],
) -> list[Decision]:
    """One decision per request, in order.

    `fingerprints` are the requests' own, `stored` the references earlier calls
    committed, `ids` the account id of every key the requests name, `locked`
    the accounts found for those ids (unknown wallets are absent), locked for
    the batch, and `transaction_ids` the id a transaction posted under each
    reference gets (a reference posts at most once).
    """
    claimed = dict(stored)
    balances = dict(locked)
    decisions: list[Decision] = []
    for request, fingerprint in zip(requests, fingerprints, strict=True):
        try:
            earlier = claimed.get(request.reference)
            if earlier is not None:
                ledger.check_replay(request.reference, earlier, Operation.POST_TRANSACTION, fingerprint)
                assert earlier.transaction_id is not None  # a PostTransaction reference records its transaction
                decisions.append(Replay(earlier.transaction_id))
                continue
            keys = {leg.account: ids[leg.account] for leg in request.legs}
            accounts = ledger.accounts_by_key(keys, balances)
            ledger.check_postings(request.legs, accounts)
        except PaymeshError as error:
            decisions.append(Refuse(error))
            continue
        transaction_id = transaction_ids[request.reference]
        decisions.append(Post(transaction_id, request, fingerprint, _apply(request, accounts, balances)))
        claimed[request.reference] = StoredReference(
            Operation.POST_TRANSACTION, fingerprint, hold_id=None, transaction_id=transaction_id
        )
    return decisions


def settle_claims(posts: Sequence[Post], claimed: Mapping[str, str]) -> tuple[list[str], list[Post]]:
    """What becomes of the references a batch claimed up front (reference → the fingerprint of its
    first item, the one it was claimed with), once its items are judged.

    Returns the references to give back (no item posted under them, or one
    with other arguments than the first) and the posts whose reference must be
    written (again, with their own fingerprint). A claim an item posted as
    claimed stays as it is.
    """
    posted = {post.request.reference: post for post in posts}
    release = [
        reference
        for reference, fingerprint in claimed.items()
        if reference not in posted or posted[reference].fingerprint != fingerprint
    ]
    write = [post for post in posts if claimed.get(post.request.reference) != post.fingerprint]
    return release, write


def _apply(
    request: PostRequest, accounts: Mapping[AccountKey, Account], balances: dict[uuid.UUID, Account]
) -> tuple[PlannedPosting, ...]:
    """Moves the legs into `balances` (what the items after this one see) and plans the postings."""
    planned = []
    for leg in sorted(request.legs, key=lambda leg: accounts[leg.account].id):
        before = accounts[leg.account]
        after = replace(before, posted=before.posted + leg.amount.amount)
        balances[before.id] = after
        planned.append(PlannedPosting(after, leg.amount, after.posted))
    return tuple(planned)
