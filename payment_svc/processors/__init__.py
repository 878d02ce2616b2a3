"""Processor adapters and the factory that picks one from the settings.

``build_processor(settings)`` returns the configured adapter (the simulator's
HTTP API or Stripe) behind retries and a per-processor circuit breaker
(resilience.py). Built once in ``server.build`` and closed at shutdown
(``await processor.aclose()``). Its breaker's state is exported as the gauge
``paymesh_processor_circuit_state{processor}`` (0 closed, 1 open, 2 half-open).
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx
from prometheus_client import Counter, Gauge

from payment_svc.processor import ProcessorClient
from payment_svc.processors.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    ResilientProcessor,
    RetryPolicy,
)
from payment_svc.processors.simulator import SimulatorProcessor
from payment_svc.processors.stripe_adapter import StripeProcessor, stripe_client
from payment_svc.settings import PaymentSettings
from paymesh_runtime.telemetry_http import traced_transport

__all__ = ["CircuitOpen", "build_processor", "export_breaker_state"]

CIRCUIT_STATE = Gauge(
    "paymesh_processor_circuit_state",
    "State of the processor's circuit breaker: 0 closed, 1 open, 2 half-open.",
    ["processor"],
)
CIRCUIT_TRANSITIONS = Counter(
    "paymesh_processor_circuit_transitions_total",
    "Circuit breaker state changes, by processor and the state entered.",
    ["processor", "state"],
)


def build_processor(settings: PaymentSettings) -> ProcessorClient:
    """The adapter `settings.processor` names, with retries and a circuit breaker."""
    adapter = _adapter(settings)
    breaker = CircuitBreaker(
        adapter.name,
        BreakerConfig(
            failure_threshold=settings.processor_breaker_failure_threshold,
            failure_ratio=settings.processor_breaker_failure_ratio,
            window_size=settings.processor_breaker_window,
            minimum_calls=min(settings.processor_breaker_minimum_calls, settings.processor_breaker_window),
            open_seconds=settings.processor_breaker_open_seconds,
        ),
        clock=time.monotonic,
        on_state_change=_count_transition,
    )
    export_breaker_state(breaker)
    policy = RetryPolicy(
        max_attempts=settings.processor_max_attempts,
        base_delay=settings.processor_retry_base_seconds,
        max_delay=settings.processor_retry_max_seconds,
    )
    return ResilientProcessor(adapter, breaker=breaker, policy=policy, sleep=asyncio.sleep, random=random.random)


def export_breaker_state(breaker: CircuitBreaker) -> None:
    """Publishes the breaker's state as the gauge, read at scrape time (so OPEN → HALF_OPEN shows)."""
    CIRCUIT_STATE.labels(breaker.name).set_function(lambda: float(breaker.state))


def _count_transition(processor: str, state: BreakerState) -> None:
    CIRCUIT_TRANSITIONS.labels(processor, state.name.lower()).inc()


def _adapter(settings: PaymentSettings) -> ProcessorClient:
    timeout = settings.processor_timeout_seconds
    if settings.processor == "stripe":
        client, http_client = stripe_client(
            api_key=settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            timeout_seconds=timeout,
        )
        return StripeProcessor(
            client=client,
            http_client=http_client,
            timeout_seconds=timeout,
            webhook_secret=settings.stripe_webhook_secret.get_secret_value(),
            webhook_tolerance_seconds=settings.processor_webhook_tolerance_seconds,
        )
    return SimulatorProcessor(
        # HTTP spans inside sampled traces (paymesh_runtime.telemetry_http).
        http=httpx.AsyncClient(base_url=settings.processor_url, timeout=timeout, transport=traced_transport()),
        timeout_seconds=timeout,
        webhook_secret=settings.processor_webhook_secret.get_secret_value(),
        webhook_tolerance_seconds=settings.processor_webhook_tolerance_seconds,
    )
