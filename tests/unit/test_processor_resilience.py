"""The processor circuit breaker and retry policy, driven by a hand-moved clock (no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from payment_svc.processor import (
    Operation,
    Outcome,
    ProcessorBusy,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
    WebhookEvent,
)
from payment_svc.processors.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    ResilientProcessor,
    RetryPolicy,
    call_resiliently,
)
from paymesh_runtime.money import Money


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Records the pauses instead of sleeping."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def breaker(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    settings: dict[str, float] = {
        "failure_threshold": 3,
        "failure_ratio": 0.5,
        "window_size": 10,
        "minimum_calls": 6,
        "open_seconds": 30.0,
    }
    settings.update(overrides)
    config = BreakerConfig(
        failure_threshold=int(settings["failure_threshold"]),
        failure_ratio=settings["failure_ratio"],
        window_size=int(settings["window_size"]),
        minimum_calls=int(settings["minimum_calls"]),
        open_seconds=settings["open_seconds"],
    )
    return CircuitBreaker("sim", config, clock)


def state_of(b: CircuitBreaker) -> BreakerState:
    # A function, so the type checker does not narrow the property between reads.
    return b.state


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.acquire()
        b.record_failure()


def succeed(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.acquire()
        b.record_success()


# --- circuit breaker ----------------------------------------------------------------------
def test_breaker_opens_after_the_threshold_of_consecutive_failures() -> None:
    b = breaker(FakeClock())
    fail(b, 2)
    assert state_of(b) is BreakerState.CLOSED
    fail(b)
    assert state_of(b) is BreakerState.OPEN


def test_a_success_resets_the_consecutive_failure_count() -> None:
    b = breaker(FakeClock(), minimum_calls=10)
    fail(b, 2)
    succeed(b)
    fail(b, 2)
    assert state_of(b) is BreakerState.CLOSED


def test_breaker_opens_on_the_failure_ratio_once_the_window_holds_enough_calls() -> None:
    b = breaker(FakeClock(), failure_threshold=100)
    for _ in range(2):
        fail(b)
        succeed(b)
    fail(b)
    assert state_of(b) is BreakerState.CLOSED  # 3 of 5: below minimum_calls (6)
    succeed(b)
    assert state_of(b) is BreakerState.CLOSED  # 3 of 6 = 0.5, evaluated only on a failure
    fail(b)
    assert state_of(b) is BreakerState.OPEN  # 4 of 7 >= 0.5


def test_an_open_breaker_fails_fast_with_circuit_open_a_processor_unavailable() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(10)
    with pytest.raises(CircuitOpen) as raised:
        b.acquire()
    assert isinstance(raised.value, ProcessorUnavailable)
    assert raised.value.retryable is False
    assert raised.value.processor == "sim"
    assert raised.value.retry_after == pytest.approx(20.0)


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes_the_breaker() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(29.9)
    assert state_of(b) is BreakerState.OPEN
    clock.advance(0.1)
    assert state_of(b) is BreakerState.HALF_OPEN
    b.acquire()  # the probe
    with pytest.raises(CircuitOpen):
        b.acquire()  # a second caller while the probe runs
    b.record_success()
    assert state_of(b) is BreakerState.CLOSED
    succeed(b, 5)


def test_a_failed_probe_opens_the_breaker_for_another_full_cool_down() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(30)
    b.acquire()
    b.record_failure()
    assert state_of(b) is BreakerState.OPEN
    clock.advance(29)
    with pytest.raises(CircuitOpen):
        b.acquire()
    clock.advance(1)
    assert state_of(b) is BreakerState.HALF_OPEN


def test_a_released_probe_frees_its_slot_without_closing_or_opening() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(30)
    b.acquire()
    b.release()
    assert state_of(b) is BreakerState.HALF_OPEN
    b.acquire()  # the slot is free again


def test_state_changes_reach_the_listener_in_order() -> None:
    clock = FakeClock()
    seen: list[tuple[str, BreakerState]] = []
    config = BreakerConfig(failure_threshold=1, window_size=5, minimum_calls=5, open_seconds=5)
    b = CircuitBreaker("sim", config, clock, lambda name, state: seen.append((name, state)))
    fail(b)
    clock.advance(5)
    succeed(b)
    assert seen == [("sim", BreakerState.OPEN), ("sim", BreakerState.HALF_OPEN), ("sim", BreakerState.CLOSED)]


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_threshold": 0},
        {"failure_ratio": 0.0},
        {"failure_ratio": 1.5},
        {"window_size": 5, "minimum_calls": 6},
        {"open_seconds": -1.0},
    ],
)
def test_nonsensical_breaker_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        BreakerConfig(**bad)  # type: ignore[arg-type]


# --- retry policy ---------------------------------------------------------------------------
def test_backoff_is_full_jitter_on_an_exponential_ceiling_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0)
    ceilings = [policy.backoff(attempt, lambda: 0.999999) for attempt in range(1, 7)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], abs=1e-5)
    assert policy.backoff(3, lambda: 0.0) == 0.0
    assert policy.backoff(3, lambda: 0.5) == pytest.approx(0.2)


def test_only_retryable_errors_are_retried_and_only_while_attempts_are_left() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(ProcessorTimeout("t"), 1)
    assert policy.should_retry(ProcessorUnavailable("u"), 2)
    assert not policy.should_retry(ProcessorUnavailable("u"), 3)
    assert not policy.should_retry(ProcessorRejected("r"), 1)
    assert not policy.should_retry(CircuitOpen("sim", 1.0), 1)


# --- retries through the breaker --------------------------------------------------------
class Script:
    """An operation that raises or returns the next scripted item, counting calls."""

    def __init__(self, *steps: ProcessorError | ProcessorResult) -> None:
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self) -> ProcessorResult:
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, ProcessorError):
            raise step
        return step


OK = ProcessorResult(outcome=Outcome.SUCCEEDED, processor_ref="auth_1")
DECLINED = ProcessorResult(outcome=Outcome.DECLINED, processor_ref="auth_2", decline_code="generic_decline")


async def test_retryable_failures_are_retried_with_backoff_until_success() -> None:
    sleep = RecordingSleep()
    op = Script(ProcessorTimeout("t"), ProcessorUnavailable("503"), OK)
    b = breaker(FakeClock())
    result = await call_resiliently(op, breaker=b, policy=RetryPolicy(3, 0.1, 2.0), sleep=sleep, random=lambda: 0.5)
    assert result == OK
    assert op.calls == 3
    assert sleep.pauses == pytest.approx([0.05, 0.1])
    assert state_of(b) is BreakerState.CLOSED


async def test_a_decline_is_a_result_and_is_not_retried() -> None:
    sleep = RecordingSleep()
    op = Script(DECLINED, OK)
    result = await call_resiliently(
        op, breaker=breaker(FakeClock()), policy=RetryPolicy(3), sleep=sleep, random=lambda: 0.5
    )
    assert result == DECLINED
    assert op.calls == 1
    assert sleep.pauses == []


async def test_a_rejected_request_is_raised_at_once_and_does_not_count_against_the_breaker() -> None:
    b = breaker(FakeClock(), failure_threshold=1, minimum_calls=1)
    op = Script(ProcessorRejected("bad token"), OK)
    with pytest.raises(ProcessorRejected):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(3), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 1
    assert state_of(b) is BreakerState.CLOSED


async def test_the_last_error_is_raised_when_the_attempts_run_out() -> None:
    op = Script(ProcessorTimeout("1"), ProcessorTimeout("2"), ProcessorTimeout("3"))
    b = breaker(FakeClock(), failure_threshold=10)
    with pytest.raises(ProcessorTimeout, match="3"):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(3), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 3


async def test_unavailable_after_a_timeout_is_still_a_timeout_the_outcome_is_unknown() -> None:
    # The first attempt may have reached the processor; the later "unavailable" answers say nothing of it.
    op = Script(ProcessorTimeout("lost response"), ProcessorUnavailable("503"), ProcessorUnavailable("503"))
    b = breaker(FakeClock(), failure_threshold=10)
    with pytest.raises(ProcessorTimeout, match="lost response; then: 503"):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(3), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 3


async def test_a_breaker_that_opens_after_a_timeout_still_reports_the_timeout() -> None:
    b = breaker(FakeClock(), failure_threshold=2)
    op = Script(ProcessorTimeout("hung"), ProcessorUnavailable("503"), OK)
    with pytest.raises(ProcessorTimeout, match="hung"):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(5), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 2
    assert state_of(b) is BreakerState.OPEN


async def test_only_unavailable_without_an_earlier_timeout_means_nothing_happened() -> None:
    op = Script(ProcessorUnavailable("503"), ProcessorUnavailable("503"))
    with pytest.raises(ProcessorUnavailable):
        await call_resiliently(
            op, breaker=breaker(FakeClock(), failure_threshold=10), policy=RetryPolicy(2), sleep=RecordingSleep(),
            random=lambda: 0.5,
        )  # fmt: skip


async def test_a_5xx_may_have_acted_so_a_breaker_opening_after_it_leaves_the_outcome_unknown() -> None:
    # A 5xx answer may come after the processor did the work (Stripe: indeterminate).
    b = breaker(FakeClock(), failure_threshold=1)
    op = Script(ProcessorUnavailable("500", may_have_acted=True), OK)
    with pytest.raises(ProcessorTimeout, match=r"500; then: .*open"):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(3), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 1


async def test_a_busy_key_is_retried_but_does_not_count_against_the_breaker() -> None:
    # "A request with this key is still running" says the processor is alive: one merchant's hanging
    # payout must not open the breaker for everybody's card payments.
    b = breaker(FakeClock(), failure_threshold=2, minimum_calls=1)
    op = Script(*(ProcessorBusy("409 in use") for _ in range(5)))
    with pytest.raises(ProcessorBusy):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(5), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 5
    assert state_of(b) is BreakerState.CLOSED


def test_which_errors_may_have_acted_and_which_count_against_the_breaker() -> None:
    table = {
        "timeout": ProcessorTimeout("t"),
        "busy": ProcessorBusy("409"),
        "refused connection": ProcessorUnavailable("connect"),
        "5xx": ProcessorUnavailable("500", may_have_acted=True),
        "breaker open": CircuitOpen("sim", 1.0),
        "rejected": ProcessorRejected("400"),
    }
    assert {name for name, e in table.items() if e.may_have_acted} == {"timeout", "busy", "5xx"}
    assert {name for name, e in table.items() if e.counts_against_breaker} == {
        "timeout",
        "refused connection",
        "5xx",
        "breaker open",  # never recorded: acquire() raises it before any call
    }


async def test_retries_stop_as_soon_as_the_breaker_opens() -> None:
    b = breaker(FakeClock(), failure_threshold=2)
    op = Script(ProcessorUnavailable("1"), ProcessorUnavailable("2"), OK)
    with pytest.raises(CircuitOpen):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(5), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 2
    assert state_of(b) is BreakerState.OPEN


async def test_an_open_breaker_does_not_call_the_processor_at_all() -> None:
    b = breaker(FakeClock(), failure_threshold=1)
    fail(b)
    op = Script(OK)
    with pytest.raises(CircuitOpen):
        await call_resiliently(op, breaker=b, policy=RetryPolicy(3), sleep=RecordingSleep(), random=lambda: 0.5)
    assert op.calls == 0


async def test_a_cancelled_probe_releases_the_half_open_slot() -> None:
    clock = FakeClock()
    b = breaker(clock, failure_threshold=1)
    fail(b)
    clock.advance(30)

    async def hangs() -> ProcessorResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.ensure_future(
        call_resiliently(hangs, breaker=b, policy=RetryPolicy(1), sleep=RecordingSleep(), random=lambda: 0.5)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state_of(b) is BreakerState.HALF_OPEN
    b.acquire()  # the slot was released


# --- the Processor wrapper ------------------------------------------------------------------
class FlakyProcessor:
    """A processor whose first call per key times out; records (method, key) of every call."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    async def _answer(self, method: str, key: str) -> ProcessorResult:
        self.calls.append((method, key))
        if sum(1 for call in self.calls if call[1] == key) == 1:
            raise ProcessorTimeout("lost")
        return ProcessorResult(outcome=Outcome.SUCCEEDED, processor_ref=f"{method}_ref")

    async def authorize(self, *, idempotency_key: str, card_token: str, amount: Money) -> ProcessorResult:
        return await self._answer("authorize", idempotency_key)

    async def capture(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        return await self._answer("capture", idempotency_key)

    async def void(self, *, idempotency_key: str, authorization_ref: str) -> ProcessorResult:
        return await self._answer("void", idempotency_key)

    async def refund(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        return await self._answer("refund", idempotency_key)

    async def payout(self, *, idempotency_key: str, bank_account_token: str, amount: Money) -> ProcessorResult:
        return await self._answer("payout", idempotency_key)

    async def find(
        self, operation: Operation, *, idempotency_key: str, authorization_ref: str = ""
    ) -> ProcessorResult | None:
        return await self._answer(f"find {operation.value}", idempotency_key)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        return WebhookEvent(
            event_id="evt_1", type="payout.paid", processor_ref="po_1", outcome=Outcome.SUCCEEDED, object_kind="payout"
        )

    async def aclose(self) -> None:
        self.closed = True


async def test_every_operation_is_retried_with_the_same_idempotency_key() -> None:
    inner = FlakyProcessor()
    # Half the calls fail here: a ratio of 1.0 keeps the breaker out of this test.
    tolerant = breaker(FakeClock(), failure_ratio=1.0)
    processor = ResilientProcessor(
        inner, breaker=tolerant, policy=RetryPolicy(3), sleep=RecordingSleep(), random=lambda: 0.5
    )
    usd = Money("USD", 500)
    await processor.authorize(idempotency_key="k-auth", card_token="tok_visa", amount=usd)
    await processor.capture(idempotency_key="k-cap", authorization_ref="auth_1", amount=usd)
    await processor.void(idempotency_key="k-void", authorization_ref="auth_1")
    await processor.refund(idempotency_key="k-ref", authorization_ref="auth_1", amount=usd)
    result = await processor.payout(idempotency_key="k-po", bank_account_token="btok_success", amount=usd)
    assert result.processor_ref == "payout_ref"
    found = await processor.find(Operation.PAYOUT, idempotency_key="k-find")
    assert found is not None
    assert found.processor_ref == "find payout_ref"
    assert inner.calls == [
        (method, key)
        for method, key in [
            ("authorize", "k-auth"),
            ("capture", "k-cap"),
            ("void", "k-void"),
            ("refund", "k-ref"),
            ("payout", "k-po"),
            ("find payout", "k-find"),
        ]
        for _ in range(2)
    ]
    assert processor.name == "flaky"
    assert processor.parse_webhook(b"{}", {}).event_id == "evt_1"
    await processor.aclose()
    assert inner.closed
