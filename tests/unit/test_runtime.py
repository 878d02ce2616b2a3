"""The shared runtime's pure parts: error statuses, page sizes, health (page tokens: test_runtime_pagination)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2

from paymesh_runtime.errors import ECHO_LIMIT, MESSAGE_LIMIT, InvalidArgument, NotFound, not_found, validation_failed
from paymesh_runtime.grpc_errors import internal_status, status_for
from paymesh_runtime.health import HealthReporter
from paymesh_runtime.money import currency_exponent
from paymesh_runtime.outbox import partition_of
from paymesh_runtime.pagination import MAX_PAGE_SIZE, page_size


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


def test_an_echo_of_a_huge_input_is_cut_to_the_echo_limit_in_message_and_metadata() -> None:
    huge = "X" * 16_384
    with pytest.raises(InvalidArgument) as caught:
        currency_exponent(huge)
    status = status_for(caught.value)
    info = _details(status)["ErrorInfo"]
    echoed = info.metadata["currency"]  # type: ignore[attr-defined]
    assert len(echoed) == ECHO_LIMIT
    assert echoed.endswith("…")
    assert "X" * ECHO_LIMIT not in status.message
    assert status.message.endswith("is not a supported ISO 4217 currency code")  # the explanation survives
    # The whole status (a gRPC trailer) stays far below Envoy's header limit.
    assert status.ByteSize() < 2_000


def test_every_message_is_bounded_even_when_its_echo_is_not_quoted() -> None:
    status = status_for(validation_failed("event_types", "Y" * 20_000))
    assert len(status.message) <= MESSAGE_LIMIT
    violation = _details(status)["BadRequest"].field_violations[0]  # type: ignore[attr-defined]
    assert violation.field == "event_types"
    assert len(violation.description) <= MESSAGE_LIMIT


def test_a_short_message_and_an_apostrophe_are_left_alone() -> None:
    message = "only the payee's merchant account or an admin may refund a payment of the caller's wallets"
    assert status_for(InvalidArgument("VALIDATION_FAILED", message)).message == message


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


def test_the_relay_partitions_keys_as_kafka_clients_do() -> None:
    partitions = [0, 1, 2, 3, 4, 5]
    for n in range(200):
        key = f"aggregate-{n}".encode()
        assert partition_of(key, partitions) == DefaultPartitioner()(key, partitions, partitions)
