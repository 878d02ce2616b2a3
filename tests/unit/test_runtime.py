"""The shared runtime's pure parts: error statuses, page tokens, health."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2

from paymesh_runtime.errors import InvalidArgument, NotFound, not_found
from paymesh_runtime.grpc_errors import internal_status, status_for
from paymesh_runtime.health import HealthReporter
from paymesh_runtime.pagination import MAX_PAGE_SIZE, decode_token, encode_token, page_size


def _details(status: object) -> dict[str, object]:
    found: dict[str, object] = {}
    for detail in status.details:  # type: ignore[attr-defined]
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def test_a_domain_error_becomes_a_status_with_error_info_and_bad_request() -> None:
    error = InvalidArgument("INVALID_CURRENCY", "nope", metadata={"currency": "XXX"}, field="currency")
    status = status_for(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    details = _details(status)
    info = details["ErrorInfo"]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_CURRENCY",
        "paymesh",
        {"currency": "XXX"},
    )  # type: ignore[attr-defined]
    assert details["BadRequest"].field_violations[0].field == "currency"  # type: ignore[attr-defined]


def test_not_found_is_the_same_for_missing_and_invisible_resources() -> None:
    error = not_found("wallet", "w1")
    assert isinstance(error, NotFound)
    assert status_for(error).code == code_pb2.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"


def test_internal_status_reveals_nothing() -> None:
    status = internal_status()
    assert status.code == code_pb2.INTERNAL
    assert status.message == "internal error"


def test_page_tokens_round_trip_and_are_bound_to_their_query() -> None:
    token = encode_token(["2026-01-01T00:00:00Z", 42], ["wallet", "w1"])
    assert decode_token(token, ["wallet", "w1"]) == ["2026-01-01T00:00:00Z", 42]
    assert decode_token("", ["wallet", "w1"]) is None
    with pytest.raises(InvalidArgument) as caught:
        decode_token(token, ["wallet", "w2"])
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        decode_token("not-a-token!", ["wallet", "w1"])


def test_page_size_defaults_caps_and_rejects_negative() -> None:
    assert page_size(0) == 50
    assert page_size(10_000) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        page_size(-1)


async def test_health_serves_only_while_every_probe_answers() -> None:
    up = {"postgres": True}

    async def probe() -> None:
        if not up["postgres"]:
            raise ConnectionError("down")

    reporter = HealthReporter(["paymesh.wallet.v1.WalletService"], {"postgres": probe})

    async def status(name: str) -> int:
        request = health_pb2.HealthCheckRequest(service=name)
        return (await reporter.servicer.Check(request, None)).status  # type: ignore[no-any-return]

    assert await reporter.check_once()
    assert await status("") == health_pb2.HealthCheckResponse.SERVING
    up["postgres"] = False
    assert not await reporter.check_once()
    assert await status("paymesh.wallet.v1.WalletService") == health_pb2.HealthCheckResponse.NOT_SERVING
    up["postgres"] = True
    await reporter.check_once()
    await reporter.shutting_down()
    assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING
