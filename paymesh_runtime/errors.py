"""The error model shared by every service, free of gRPC imports.

Domain code raises a PaymeshError subclass naming a reason from
paymesh.common.v1.ErrorReason; the one mapper in grpc_errors turns it into a
gRPC status with google.rpc.ErrorInfo (and BadRequest for field errors).
Handlers never build statuses themselves.

A message or metadata value may echo what the caller sent (an unknown
currency, a resource id). The mapper shortens every echo to ECHO_LIMIT
characters (`shorten`) and every message to MESSAGE_LIMIT, so no input, however
long, makes a status larger than the edge's header limit (statuses travel in
gRPC trailers).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

DOMAIN = "paymesh"
# The longest echo of a caller's value in a message or in ErrorInfo metadata.
ECHO_LIMIT = 64
# The longest status message (each echo in it already shortened to ECHO_LIMIT).
MESSAGE_LIMIT = 512
ELLIPSIS = "…"


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


def dependency_unavailable(dependency: str) -> Unavailable:
    """The answer for a dependency of the service ("postgresql", "redis") that did not answer."""
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE",
        f"a dependency of the service ({dependency}) did not answer; retry with the same idempotency key",
        metadata={"dependency": dependency},
    )


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to at most `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS
