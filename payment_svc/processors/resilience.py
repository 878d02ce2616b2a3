"""Timeouts aside, what keeps a flaky processor from hurting us: retries and a circuit breaker.

Pure: no HTTP and no real clock. The clock, the sleep and the random source are
injected, so the unit tests drive time by hand and never sleep.

- ``RetryPolicy``: exponential backoff with full jitter
  (delay = uniform(0, min(max_delay, base_delay * 2**(attempt-1)))), on
  retryable errors only (``ProcessorError.retryable``); declines are results,
  not errors, and ``ProcessorRejected`` is not retryable.
- ``CircuitBreaker``: CLOSED until ``failure_threshold`` consecutive failures
  or a failure ratio over a sliding window of calls; then OPEN, failing fast
  with ``CircuitOpen`` (a ``ProcessorUnavailable``) for ``open_seconds``; then
  HALF_OPEN, letting ``half_open_probes`` calls through: a successful probe
  closes it, a failed one opens it again.
- ``ResilientProcessor``: any ``Processor`` behind both. A retry repeats the
  call with the same arguments, hence the same idempotency key.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from payment_svc.processor import (
    Operation,
    ProcessorClient,
    ProcessorError,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
    WebhookEvent,
)
from paymesh_runtime.backoff import Random, full_jitter
from paymesh_runtime.money import Money

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class CircuitOpen(ProcessorUnavailable):
    """The processor's circuit breaker is open: the call was not attempted.

    Nothing reached the processor, so nothing was charged. Not retried by the
    adapter (retrying into an open breaker only burns the caller's deadline).
    """

    retryable = False

    def __init__(self, processor: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker for processor {processor!r} is open; retry in {retry_after:.1f}s")
        self.processor = processor
        self.retry_after = retry_after


# ---------------------------------------------------------------------------
# Retry policy
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a retryable call is repeated."""

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, attempt: int, random: Random) -> float:
        """The pause after failed attempt number `attempt` (1-based): full jitter."""
        return full_jitter(attempt, self.base_delay, self.max_delay, random)

    def should_retry(self, error: ProcessorError, attempt: int) -> bool:
        return error.retryable and attempt < self.max_attempts


# ---------------------------------------------------------------------------
# Circuit breaker
# ---------------------------------------------------------------------------
class BreakerState(enum.IntEnum):
    # The values are what the Prometheus gauge exports.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5  # consecutive failures that open the circuit
    failure_ratio: float = 0.5  # ... or this share of failures among the window
    window_size: int = 20  # calls the ratio is computed over
    minimum_calls: int = 10  # the ratio only counts once the window holds this many
    open_seconds: float = 30.0  # cool-down before a probe is let through
    half_open_probes: int = 1  # calls let through at once while half-open

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.window_size < 1 or self.half_open_probes < 1:
            raise ValueError("failure_threshold, window_size and half_open_probes must be at least 1")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        if self.minimum_calls < 1 or self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls must be between 1 and window_size")
        if self.open_seconds < 0:
            raise ValueError("open_seconds must not be negative")


StateListener = Callable[[str, BreakerState], None]


class CircuitBreaker:
    """One processor's breaker. Thread-safe; see the module docstring.

    Use: ``breaker.acquire()`` before a call (raises CircuitOpen), then exactly
    one of ``record_success()``, ``record_failure()`` or ``release()`` (the call
    ended without telling anything about the processor, e.g. it was cancelled).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        clock: Clock,
        on_state_change: StateListener | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_state_change = on_state_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._window: deque[bool] = deque(maxlen=config.window_size)  # True = failure
        self._probes_in_flight = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._advance_clock()
            return self._state

    def acquire(self) -> None:
        """Lets a call through or raises CircuitOpen."""
        with self._lock:
            self._advance_clock()
            if self._state is BreakerState.CLOSED:
                return
            if self._state is BreakerState.HALF_OPEN and self._probes_in_flight < self.config.half_open_probes:
                self._probes_in_flight += 1
                return
            retry_after = max(0.0, self._opened_at + self.config.open_seconds - self._clock())
        raise CircuitOpen(self.name, retry_after)

    def record_success(self) -> None:
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)
                self._transition(BreakerState.CLOSED)
                return
            self._consecutive_failures = 0
            self._window.append(False)

    def record_failure(self) -> None:
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)
                self._transition(BreakerState.OPEN)
                return
            if self._state is BreakerState.OPEN:
                return  # a call admitted before the circuit opened; already counted as open
            self._consecutive_failures += 1
            self._window.append(True)
            if self._tripped():
                self._transition(BreakerState.OPEN)

    def release(self) -> None:
        """The admitted call ended without an outcome (cancelled): free its probe slot."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)

    # --- internals (called with the lock held) -------------------------------
    def _tripped(self) -> bool:
        if self._consecutive_failures >= self.config.failure_threshold:
            return True
        calls = len(self._window)
        if calls < self.config.minimum_calls:
            return False
        return sum(self._window) / calls >= self.config.failure_ratio

    def _advance_clock(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.config.open_seconds:
            self._transition(BreakerState.HALF_OPEN)

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._consecutive_failures = 0
        self._window.clear()
        self._probes_in_flight = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if self._on_state_change is not None:
            self._on_state_change(self.name, state)


# ---------------------------------------------------------------------------
# Retries through the breaker
# ---------------------------------------------------------------------------
async def call_resiliently(
    operation: Callable[[], Awaitable[T]],
    *,
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    sleep: Sleep,
    random: Random,
) -> T:
    """Runs `operation` through the breaker, retrying retryable ProcessorErrors.

    `operation` must be idempotent (it carries the same idempotency key every
    time). The breaker measures the processor's health, not one request's:
    only errors that say the processor is unwell count as failures (timeouts,
    5xx, refused connections); an answer that refuses the request or says an
    earlier request with the key is still running counts as a success.

    Once an attempt may have acted at the processor (it timed out, lost its
    connection or got a 5xx), the outcome stays unknown: if the later attempts
    end unavailable (down, or the breaker opened) instead of answering, the
    call fails with ProcessorTimeout rather than ProcessorUnavailable ("nothing
    happened"), and the caller asks again later with the same key.
    """
    attempt = 0
    acted: ProcessorError | None = None
    while True:
        attempt += 1
        try:
            breaker.acquire()
            try:
                result = await operation()
            except ProcessorError as error:
                if error.counts_against_breaker:
                    breaker.record_failure()
                else:
                    breaker.record_success()
                raise
            except BaseException:
                breaker.release()  # cancelled or a bug: says nothing about the processor
                raise
        except ProcessorError as error:
            if error.may_have_acted:
                acted = error
            if not policy.should_retry(error, attempt):
                if acted is not None and not error.may_have_acted:
                    raise ProcessorTimeout(f"{acted.message}; then: {error.message}") from error
                raise
            await sleep(policy.backoff(attempt, random))
            continue
        breaker.record_success()
        return result


class ResilientProcessor:
    """Wraps a single-attempt adapter with retries and a circuit breaker.

    Implements ``ProcessorClient``; every retry passes the same keyword arguments,
    so the processor sees the same idempotency key and charges once.
    """

    def __init__(
        self,
        inner: ProcessorClient,
        *,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        sleep: Sleep,
        random: Random,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.breaker = breaker
        self.policy = policy
        self._sleep = sleep
        self._random = random

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await call_resiliently(
            operation, breaker=self.breaker, policy=self.policy, sleep=self._sleep, random=self._random
        )

    async def authorize(self, *, idempotency_key: str, card_token: str, amount: Money) -> ProcessorResult:
        return await self._call(
            lambda: self.inner.authorize(idempotency_key=idempotency_key, card_token=card_token, amount=amount)
        )

    async def capture(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        return await self._call(
            lambda: self.inner.capture(
                idempotency_key=idempotency_key, authorization_ref=authorization_ref, amount=amount
            )
        )

    async def void(self, *, idempotency_key: str, authorization_ref: str) -> ProcessorResult:
        return await self._call(
            lambda: self.inner.void(idempotency_key=idempotency_key, authorization_ref=authorization_ref)
        )

    async def refund(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        return await self._call(
            lambda: self.inner.refund(
                idempotency_key=idempotency_key, authorization_ref=authorization_ref, amount=amount
            )
        )

    async def payout(self, *, idempotency_key: str, bank_account_token: str, amount: Money) -> ProcessorResult:
        return await self._call(
            lambda: self.inner.payout(
                idempotency_key=idempotency_key, bank_account_token=bank_account_token, amount=amount
            )
        )

    async def find(
        self, operation: Operation, *, idempotency_key: str, authorization_ref: str = ""
    ) -> ProcessorResult | None:
        # A read, but of the same processor: the breaker fails it fast while the processor is unwell.
        return await self._call(
            lambda: self.inner.find(operation, idempotency_key=idempotency_key, authorization_ref=authorization_ref)
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        # Local signature check: no processor call, so neither breaker nor retries.
        return self.inner.parse_webhook(body, headers)

    async def aclose(self) -> None:
        await self.inner.aclose()
