"""Typed exceptions for paymesh's errors.

paymesh answers every failure with a gRPC status whose details (trailer
`grpc-status-details-bin`, a google.rpc.Status) carry a google.rpc.ErrorInfo:
its `reason` (e.g. INSUFFICIENT_FUNDS, IDEMPOTENCY_KEY_REUSED) is the stable,
documented thing to branch on, never the message. A field's error also carries
a google.rpc.BadRequest naming the field.

    try:
        await client.pay(...)
    except paymesh_client.FailedPrecondition as error:
        if error.reason == "INSUFFICIENT_FUNDS": ...
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import grpc

from paymesh_client.proto.google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class PaymeshError(Exception):
    """A call paymesh refused or could not answer; `reason` is ErrorInfo's (empty if the status had none)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name} {reason or '(no reason)'}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = field_violations


class InvalidArgument(PaymeshError):
    """INVALID_ARGUMENT or OUT_OF_RANGE: the request is wrong; sending it again will not help."""


class Unauthenticated(PaymeshError):
    """UNAUTHENTICATED: no token, or an expired or invalid one."""


class PermissionDenied(PaymeshError):
    """PERMISSION_DENIED: the caller may not do this (e.g. someone else's wallet)."""


class NotFound(PaymeshError):
    """NOT_FOUND: no such resource for this caller."""


class AlreadyExists(PaymeshError):
    """ALREADY_EXISTS: e.g. IDEMPOTENCY_KEY_REUSED, an email already registered."""


class FailedPrecondition(PaymeshError):
    """FAILED_PRECONDITION: not in this state (INSUFFICIENT_FUNDS, INVALID_STATE_TRANSITION, PAYMENT_DECLINED...)."""


class Aborted(PaymeshError):
    """ABORTED: a concurrent call on the same resource or idempotency key; it may succeed later."""


class ResourceExhausted(PaymeshError):
    """RESOURCE_EXHAUSTED: a rate limit."""


class Unavailable(PaymeshError):
    """UNAVAILABLE: paymesh or one of its dependencies is down; retried by the client, raised once it gives up."""


class DeadlineExceeded(PaymeshError):
    """DEADLINE_EXCEEDED: no answer within the timeout; retried by the client, raised once it gives up."""


class InternalError(PaymeshError):
    """INTERNAL, UNKNOWN and anything else unexpected."""


_BY_CODE: dict[grpc.StatusCode, type[PaymeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_from_status(code: grpc.StatusCode, message: str, status_details: bytes | None) -> PaymeshError:
    """The typed exception of a failed call: `status_details` is the serialized google.rpc.Status, if any."""
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    if status_details:
        status = status_pb2.Status.FromString(status_details)
        message = status.message or message
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad_request):
                violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    kind = _BY_CODE.get(code, InternalError)
    return kind(code, message, reason, metadata, tuple(violations))


def error_from_rpc(error: grpc.aio.AioRpcError) -> PaymeshError:
    # A grpc.aio.Metadata of (key, value) pairs at run time; grpc-stubs types it as the sync API's.
    trailers = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    details = next((v for k, v in trailers if k == STATUS_DETAILS_KEY and isinstance(v, bytes)), None)
    return error_from_status(error.code(), error.details() or "", details)
