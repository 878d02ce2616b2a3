"""The one mapper from exceptions to gRPC statuses (applied by paymesh_runtime.interceptors).

PaymeshError → its code with google.rpc.ErrorInfo (+ BadRequest for a field),
every echo of the caller's input shortened (errors.ECHO_LIMIT, MESSAGE_LIMIT).
A dependency's outage (paymesh_runtime.failures: PostgreSQL, Redis, a
connection refused) → UNAVAILABLE with reason DEPENDENCY_UNAVAILABLE, which
clients retry. Anything else → INTERNAL with reason INTERNAL_ERROR and a
generic message; the traceback goes to the log under the trace id (database
errors without their messages, which may quote parameters), never to the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from paymesh_runtime import failures
from paymesh_runtime.errors import (
    DOMAIN,
    ECHO_LIMIT,
    MESSAGE_LIMIT,
    Code,
    PaymeshError,
    Unavailable,
    dependency_unavailable,
    shorten,
)

log = logging.getLogger(__name__)

_GRPC_CODES: dict[Code, grpc.StatusCode] = {c: grpc.StatusCode[c.value] for c in Code}
_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}
# A quoted echo in a message, as `{value!r}` writes it: '...' or "..." with backslash escapes,
# the opening quote not inside a word (the apostrophe of "caller's" opens nothing).
_QUOTED = re.compile(r"(?<!\w)(?:'(?:[^'\\\n]|\\.)*'" + r'|"(?:[^"\\\n]|\\.)*")')


def _shorten_quoted(match: re.Match[str]) -> str:
    quoted = match.group(0)
    if len(quoted) <= ECHO_LIMIT + 2:
        return quoted
    return quoted[0] + shorten(quoted[1:-1]) + quoted[-1]


def bounded_message(message: str) -> str:
    """A status message with each quoted echo cut to ECHO_LIMIT characters and the whole to MESSAGE_LIMIT."""
    if len(message) <= ECHO_LIMIT:
        return message
    return shorten(_QUOTED.sub(_shorten_quoted, message), MESSAGE_LIMIT)


def status_for(error: PaymeshError) -> status_pb2.Status:
    """Builds the google.rpc.Status of a PaymeshError, every echo of the caller's input shortened."""
    message = bounded_message(error.message)
    metadata = {key: shorten(value) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=shorten(error.field, 2 * ECHO_LIMIT), description=message, reason=error.reason
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=getattr(code_pb2, error.code.value), message=message, details=details)


def internal_status() -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR", domain=DOMAIN)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)])


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


async def abort_with(context: Any, status: status_pb2.Status) -> None:
    await context.abort_with_status(rpc_status.to_status(status))


def status_for_exception(error: Exception, method: str) -> status_pb2.Status:
    """The status a unary handler's exception answers with; the unexpected ones are logged."""
    if isinstance(error, PaymeshError):
        return status_for(error)
    if isinstance(error, NotImplementedError):
        # The generated servicer base for a method not built yet.
        return status_pb2.Status(code=code_pb2.UNIMPLEMENTED, message=f"{method} is not implemented")
    if isinstance(error, grpc.aio.AioRpcError):
        # A downstream service failed in a way this one did not expect.
        log.warning("downstream call failed in %s: %s", method, error.code())
        return status_for(_downstream(error))
    dependency = failures.unavailable_dependency(error)
    if dependency is not None:
        log.warning("%s did not answer in %s: %s", dependency, method, failures.describe(error))
        return status_for(dependency_unavailable(dependency))
    log.error("unhandled error in %s\n%s", method, failures.loggable_traceback(error))
    return internal_status()


def status_code_of(status: status_pb2.Status) -> grpc.StatusCode:
    return _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)


def _downstream(error: grpc.aio.AioRpcError) -> PaymeshError:
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE",
        "a dependency did not answer; retry with the same idempotency key",
        metadata={"dependency_status": error.code().name},
    )
