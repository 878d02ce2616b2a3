"""The chaos workload's client rules and the evidence it keeps: what is retried with the same key, how long
it waits, how an error answer is read, which resources a violation names."""

from __future__ import annotations

import pytest

from devstack.chaos.client import backoff, error_reason, should_retry
from devstack.chaos.evidence import MAX_IDS, named_ids
from devstack.chaos.model import Attempt, RequestRecord
from devstack.chaos.verdict import CheckResult


@pytest.mark.parametrize(
    ("status", "reason", "retried"),
    [
        (0, "ConnectError", True),  # no answer at all
        (503, "DEPENDENCY_UNAVAILABLE", True),
        (503, "PROCESSOR_UNAVAILABLE", True),
        (504, "DEPENDENCY_UNAVAILABLE", True),
        (502, "", True),
        (429, "RATE_LIMITED", True),
        (409, "IDEMPOTENCY_KEY_IN_USE", True),
        (409, "PAYMENT_IN_PROGRESS", True),
        (409, "IDEMPOTENCY_KEY_REUSED", False),  # another request under the key: a bug of the client, not a retry
        (400, "INSUFFICIENT_FUNDS", False),
        (500, "INTERNAL_ERROR", False),  # documented as unexpected: not retried, check 1d reports it
        (200, "", False),
    ],
)
def test_what_a_well_behaved_client_retries_with_the_same_key(status: int, reason: str, retried: bool) -> None:
    assert should_retry(status, reason) is retried


def test_the_backoff_doubles_from_a_third_of_a_second_up_to_four() -> None:
    assert [backoff(n) for n in range(1, 8)] == pytest.approx([0.3, 0.6, 1.2, 2.4, 4.0, 4.0, 4.0])
    assert sum(backoff(n) for n in range(1, 10)) < 30  # ten attempts give up within Envoy's route timeout


def test_the_reason_of_an_error_answer_is_its_error_info() -> None:
    body = {
        "code": 9,
        "message": "x",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INSUFFICIENT_FUNDS"}],
    }
    assert error_reason(body) == "INSUFFICIENT_FUNDS"
    assert error_reason({"code": 14, "message": "upstream connect error"}) == ""
    assert error_reason("upstream connect error or disconnect") == ""


def test_a_request_is_summed_up_by_its_last_answer() -> None:
    record = RequestRecord(1, "pay", "u", "POST", "/v1/payments", "k", 0.0)
    assert record.outcome == "no answer"
    record.attempts = [Attempt(503, "DEPENDENCY_UNAVAILABLE", 1.0), Attempt(200, "", 2.0)]
    record.status = 200
    assert record.ok
    assert record.outcome == "2xx"


def test_evidence_is_kept_for_the_resources_the_violations_name_once_each() -> None:
    first, second = "71641dac-13c4-4fc4-8887-7df75cd42ee9", "6a7a04b3-5553-4f9a-970d-b786c30e7413"
    checks = [
        CheckResult("2e", "money", violations=[f"payment {first} (FAILED) moved {{'{second}': -2266}}"]),
        CheckResult("1b", "final", violations=[f"payment {first} is PENDING"]),
    ]
    assert named_ids(checks) == [first, second]
    many = [CheckResult("5", "n", violations=[f"event {i:08x}-0000-0000-0000-000000000000 lost" for i in range(99)])]
    assert len(named_ids(many)) == MAX_IDS
