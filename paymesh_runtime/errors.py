"""The error model shared by every service, free of gRPC imports.

Domain code raises a PaymeshError subclass naming a reason from
paymesh.common.v1.ErrorReason; the one mapper in grpc_errors turns it into a
gRPC status with google.rpc.ErrorInfo (and BadRequest for field errors).
Handlers never build statuses themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

DOMAIN = "paymesh"


class Code(enum.Enum):
    """The gRPC status codes paymesh uses (names match grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class PaymeshError(Exception):
    """An expected failure with a documented reason. The request changed nothing."""

    code: Code = Code.INTERNAL

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        # The request field at fault, reported as a google.rpc.BadRequest.
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgument(PaymeshError):
    code = Code.INVALID_ARGUMENT


class FailedPrecondition(PaymeshError):
    code = Code.FAILED_PRECONDITION


class Unauthenticated(PaymeshError):
    code = Code.UNAUTHENTICATED


class PermissionDenied(PaymeshError):
    code = Code.PERMISSION_DENIED


class NotFound(PaymeshError):
    code = Code.NOT_FOUND


class AlreadyExists(PaymeshError):
    code = Code.ALREADY_EXISTS


class Aborted(PaymeshError):
    code = Code.ABORTED


class ResourceExhausted(PaymeshError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(PaymeshError):
    code = Code.UNAVAILABLE


def not_found(resource_type: str, resource_id: str) -> NotFound:
    """The one NOT_FOUND for missing and invisible resources alike."""
    return NotFound(
        "RESOURCE_NOT_FOUND",
        f"{resource_type} {resource_id!r} not found",
        metadata={"resource_type": resource_type, "resource_id": resource_id},
    )


def validation_failed(field: str, message: str) -> InvalidArgument:
    return InvalidArgument("VALIDATION_FAILED", f"{field}: {message}", field=field)
