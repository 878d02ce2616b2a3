"""payment_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from payment_svc import store
from payment_svc.commands import COMMANDS
from payment_svc.events import PaymentEvents
from payment_svc.idempotency import IdempotencyKeys
from payment_svc.processors import build_processor
from payment_svc.recovery import RecoveryWorker
from payment_svc.replica import Replica
from payment_svc.saga import Saga, SagaConfig
from payment_svc.service import PaymentService
from payment_svc.settings import PaymentSettings
from payment_svc.transfers import TransferConfig, WalletTransfers
from payment_svc.wallet_client import WalletClient
from payment_svc.wallets import WalletDirectory
from paymesh.payment.v1 import payment_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.callers import end_users
from paymesh_runtime.channels import internal_channel
from paymesh_runtime.db import asyncpg_dsn, create_engine, create_pool, database_probe
from paymesh_runtime.identity import ServiceTokens
from paymesh_runtime.outbox import Outbox, outbox_relay
from paymesh_runtime.pagination import PageTokens
from paymesh_runtime.server import Servicer

NAME = "payment_svc"
log = logging.getLogger(__name__)


def saga_config(settings: PaymentSettings, replica: Replica) -> SagaConfig:
    return SagaConfig(
        # <replica name>#<incarnation>: unique per process (payment_svc.replica).
        worker_id=replica.owner,
        lease=timedelta(seconds=settings.lease_seconds),
        capture_window=timedelta(seconds=settings.capture_window_seconds),
        automatic_hold_ttl_seconds=settings.automatic_hold_ttl_seconds,
        payout_hold_ttl_seconds=settings.payout_hold_ttl_seconds,
        retry_backoff=timedelta(seconds=settings.retry_backoff_seconds),
        max_retry_backoff=timedelta(seconds=settings.max_retry_backoff_seconds),
        processor_poll=timedelta(seconds=settings.processor_poll_seconds),
        crash_after_step=settings.crash_after_step,
    )


async def build(settings: PaymentSettings) -> app.ServiceApp:
    engine = create_engine(settings)
    outbox = Outbox(store.outbox, store.outbox_sequence, NAME)
    events = PaymentEvents(outbox)
    tokens = ServiceTokens(settings.service_token_secret.get_secret_value())
    wallet_channel = internal_channel(settings.wallet_addr, caller=NAME, tokens=tokens)
    wallet_svc = WalletClient(wallet_channel, settings.wallet_timeout_seconds)
    processor = build_processor(settings)
    keys = IdempotencyKeys(timedelta(hours=settings.idempotency_retention_hours))
    replica = await Replica.claim(asyncpg_dsn(settings), settings.replica_id)
    config = saga_config(settings, replica)
    async with engine.begin() as conn:
        resumed = await store.release_earlier_incarnations(conn, replica.name, replica.owner)
    if resumed:
        log.info("resuming %d payments, refunds and payouts of earlier incarnations at once", resumed)
    saga = Saga(engine, wallet_svc, processor, events, keys, config)
    pool = await create_pool(settings, settings.batch_pool_size, generic_plans=True)
    transfers = WalletTransfers(
        pool,
        wallet_svc,
        outbox,
        TransferConfig(
            owner=config.worker_id,
            lease=config.lease,
            key_retention=timedelta(hours=settings.idempotency_retention_hours),
            retry_after=config.retry_backoff,
            max_batch=settings.batch_max_size,
            max_in_flight=settings.batch_max_in_flight,
            crash_at=settings.crash_after_step,
        ),
    )
    pages = PageTokens.from_settings(settings)
    service = PaymentService(engine, saga, WalletDirectory(wallet_svc), keys, events, processor, transfers, pages)
    recovery = RecoveryWorker(
        engine,
        saga,
        keys,
        lease=config.lease,
        interval_seconds=settings.recovery_interval_seconds,
        batch_size=settings.recovery_batch_size,
    )
    relay = outbox_relay(engine, settings)

    async def close_wallet_channel() -> None:
        await wallet_channel.close(None)

    return app.ServiceApp(
        servicers=[
            Servicer(
                "paymesh.payment.v1.PaymentService", service, payment_pb2_grpc.add_PaymentServiceServicer_to_server
            )
        ],
        probes={"postgres": database_probe(engine)},
        callers=end_users(settings, NAME),
        background=[relay.run, recovery.run, recovery.prune_keys, recovery.report_backlog, replica.watch],
        cleanup=[transfers.drain, close_wallet_channel, processor.aclose, pool.close, engine.dispose, replica.close],
    )


def main() -> None:
    app.main(NAME, PaymentSettings, build, Path(__file__).parent / "migrations", commands=COMMANDS)
