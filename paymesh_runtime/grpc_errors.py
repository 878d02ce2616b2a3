"""The one mapper from exceptions to gRPC statuses (applied by paymesh_runtime.interceptors).

PaymeshError → its code with google.rpc.ErrorInfo (+ BadRequest for a field).
Anything else → INTERNAL with reason INTERNAL_ERROR and a generic message;
the traceback goes to the log under the trace id, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from paymesh_runtime.errors import DOMAIN, Code, PaymeshError, Unavailable

log = logging.getLogger(__name__)

_GRPC_CODES: dict[Code, grpc.StatusCode] = {c: grpc.StatusCode[c.value] for c in Code}
_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def status_for(error: PaymeshError) -> status_pb2.Status:
    """Builds the google.rpc.Status of a PaymeshError."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    details = [_pack(info)]
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message, reason=error.reason
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=getattr(code_pb2, error.code.value), message=error.message, details=details)


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
    log.error("unhandled error in %s", method, exc_info=error)
    return internal_status()


def status_code_of(status: status_pb2.Status) -> grpc.StatusCode:
    return _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)


def _downstream(error: grpc.aio.AioRpcError) -> PaymeshError:
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE",
        "a dependency did not answer; retry with the same idempotency key",
        metadata={"dependency_status": error.code().name},
    )
