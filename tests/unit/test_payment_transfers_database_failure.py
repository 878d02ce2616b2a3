"""A batch of wallet payments whose database connection fails under it answers every caller "retry", not 500.

Chaos seed 34 (PostgreSQL killed with -9 mid-batch) met asyncpg's InternalClientError: its protocol was left
in the "failed" state by a connection lost between two statements of the batch. The batch must answer each
caller DEPENDENCY_UNAVAILABLE (the recovery worker finishes whatever was committed), as it does for a closed
connection. The connection here is a stand-in that raises exactly what asyncpg raised; what the real
database does after such a loss is the crash and chaos suites' subject.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest

from payment_svc import store
from payment_svc.records import TransferIntent
from payment_svc.transfers import TransferConfig, WalletTransfers
from payment_svc.wallet_client import WalletClient
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money
from paymesh_runtime.outbox import Outbox

LOST = asyncpg.InternalClientError('cannot switch to state 13; protocol is in the "failed" state')
CLOSED = asyncpg.InterfaceError("connection is closed")


class _FailingConnection:
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def fetchrow(self, *args: Any, **kwargs: Any) -> None:
        raise self._error

    fetch = fetchval = execute = fetchrow


class _Pool:
    def __init__(self, error: Exception) -> None:
        self._connection = _FailingConnection(error)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_FailingConnection]:
        yield self._connection


def _intent() -> TransferIntent:
    return TransferIntent(
        payment_id=uuid.uuid4(),
        payer_id="user-1",
        payee_id="user-2",
        source_wallet_id=str(uuid.uuid4()),
        destination_wallet_id=str(uuid.uuid4()),
        amount=Money("USD", 100),
        description="",
        idempotency_key="key-1",
        fingerprint=b"\0" * 32,
    )


@pytest.mark.parametrize("error", [LOST, CLOSED], ids=["protocol failed", "connection closed"])
async def test_a_lost_connection_answers_every_caller_dependency_unavailable(error: Exception) -> None:
    config = TransferConfig(
        owner="replica-1", lease=timedelta(seconds=30), key_retention=timedelta(days=1),
        retry_after=timedelta(seconds=5),
    )  # fmt: skip
    transfers = WalletTransfers(
        cast(asyncpg.Pool, _Pool(error)),
        cast(WalletClient, object()),  # never reached: the batch fails at its first statement
        Outbox(store.outbox, store.outbox_sequence, "payment_svc"),
        config,
    )
    answer = await transfers.pay(_intent())
    assert isinstance(answer, PaymeshError)
    assert answer.reason == "DEPENDENCY_UNAVAILABLE"
