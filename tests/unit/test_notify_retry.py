"""The retry schedules (notify_svc.retry): backoff with jitter, a window for webhooks, endpoint verdicts."""

from __future__ import annotations

import pytest

from notify_svc.retry import Schedule, endpoint_verdict, next_retry

EMAIL = Schedule(max_attempts=8, backoff_base_seconds=2, backoff_max_seconds=3600)
WEBHOOK = Schedule(max_attempts=60, backoff_base_seconds=30, backoff_max_seconds=21600, window_seconds=3 * 86400)


def test_the_pause_doubles_up_to_the_cap_with_full_jitter() -> None:
    assert next_retry(EMAIL, 1, 0, lambda: 0.999) == pytest.approx(2 * 0.999)
    assert next_retry(EMAIL, 4, 0, lambda: 0.5) == pytest.approx(8.0)
    assert next_retry(EMAIL, 7, 0, lambda: 0.0) == 0.0
    assert next_retry(WEBHOOK, 40, 0, lambda: 0.999) == pytest.approx(21600 * 0.999)


def test_after_the_last_attempt_the_delivery_is_given_up() -> None:
    assert next_retry(EMAIL, 8, 0, lambda: 0.5) is None
    assert next_retry(EMAIL, 7, 0, lambda: 0.5) is not None


def test_a_webhook_is_retried_until_its_window_ends_the_last_attempt_at_the_end() -> None:
    window = WEBHOOK.window_seconds
    assert window is not None
    assert next_retry(WEBHOOK, 12, window - 100, lambda: 0.9) == pytest.approx(100)
    assert next_retry(WEBHOOK, 12, window, lambda: 0.9) is None


def test_the_default_webhook_schedule_spans_about_three_days() -> None:
    """Mean jitter: how long and how many attempts until the window closes."""
    age, attempt = 0.0, 1
    while (delay := next_retry(WEBHOOK, attempt, age, lambda: 0.5)) is not None:
        age += delay
        attempt += 1
    assert age == pytest.approx(3 * 86400)
    assert 20 <= attempt <= 40


def test_an_endpoint_round_succeeds_if_any_attempt_was_accepted_and_is_gone_on_any_410() -> None:
    assert endpoint_verdict([(500, False), (200, True)]).succeeded
    assert not endpoint_verdict([(500, False), (None, False)]).succeeded
    assert endpoint_verdict([(410, False)]).gone
    assert not endpoint_verdict([(404, False)]).gone
