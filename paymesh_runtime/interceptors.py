"""The one server interceptor of every service: traced, counted, timed, logged, input checked, caller resolved,
errors mapped.

`MeshServerInterceptor` replaces what used to be a chain of three
(OpenTelemetry's gRPC instrumentation, metrics, error mapping): one wrapper per
unary method, built on the method's first call and reused, doing per call only
what depends on the call. Streaming handlers (health Watch, reflection) pass
through untouched.

Each call runs inside its server span and with the edge's `x-request-id`
bound (paymesh_runtime.telemetry_logs), so every log line it writes carries
both; its own INFO line (method, code, duration) is written at its end.

Every unary method's request deserializer is wrapped by
paymesh_runtime.validation: a request that does not decode (invalid UTF-8)
or holds a NUL in a string field never reaches the handler; it is answered
INVALID_ARGUMENT by the same error mapping as a handler's own refusal.

Before the handler runs, the call's end user is resolved from its
credentials (paymesh_runtime.callers: a bearer token the service verifies,
or identity headers from a delegating service) and bound to the call, where
`paymesh_runtime.identity.require_user` finds it.

Services may still add interceptors of their own (`UnaryInterceptor`
subclasses implementing `around(call, request, context, method)`); they run
inside the mesh interceptor, so their time is in the span and the metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace

from paymesh_runtime import telemetry
from paymesh_runtime.callers import Callers
from paymesh_runtime.grpc_errors import abort_with, status_code_of, status_for_exception
from paymesh_runtime.identity import Caller, bind_caller, unbind_caller
from paymesh_runtime.telemetry_logs import RpcLog
from paymesh_runtime.validation import Refused, checked

UnaryCall = Callable[[Any, Any], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any]"]]


class MeshServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Span, metrics, the caller and the error mapping of every unary call, in one wrapper per method.

    `callers` resolves each call's end user (paymesh_runtime.callers).

    `reuse_handlers`: the wrapped handler of a method is kept and returned
    without asking the rest of the chain again. Right only when this is the
    last interceptor (the chain then ends at the server's own, fixed method
    table); `create_server` turns it off when a service adds interceptors.
    """

    def __init__(
        self,
        callers: Callers,
        *,
        reuse_handlers: bool = True,
        tracer: trace.Tracer | None = None,
        rpc_log: RpcLog | None = None,
    ) -> None:
        self._callers = callers
        self._tracer = tracer or telemetry.tracer()
        self._reuse = reuse_handlers
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._rpc_log = rpc_log or RpcLog()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._unary(handler.unary_unary, telemetry.MethodTelemetry(method)),  # type: ignore[arg-type]
            request_deserializer=checked(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        if self._reuse:
            self._handlers[method] = wrapped
        return wrapped

    def _unary(self, call: UnaryCall, method: telemetry.MethodTelemetry) -> UnaryCall:
        tracer = self._tracer
        callers = self._callers
        rpc_log = self._rpc_log

        async def traced(request: Any, context: Any) -> Any:
            metadata = context.invocation_metadata()
            served = telemetry.start_server_span(tracer, method, metadata, context.peer())
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            unexpected: BaseException | None = None
            caller: contextvars.Token[Caller] | None = None
            try:
                if type(request) is Refused:
                    raise request.error
                caller = bind_caller(await callers.resolve(metadata or ()))
                response = await call(request, context)
                code = context.code() or code  # a handler may set a code without raising
                return response
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN  # the handler aborted with its own status
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                status = status_for_exception(error, method.name)
                code = status_code_of(status)
                if code is grpc.StatusCode.INTERNAL:
                    unexpected = error
                await abort_with(context, status)
            finally:
                if caller is not None:
                    unbind_caller(caller)
                seconds = time.perf_counter() - start
                method.observe(code, seconds)
                if not (method.quiet and code is grpc.StatusCode.OK):
                    rpc_log.log(method.name, code, seconds)  # inside the call's span and request id
                served.finish(code, unexpected)

        return traced


class UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Base of a service's own interceptor: wraps each unary call in `around`."""

    async def around(self, call: UnaryCall, request: Any, context: Any, method: str) -> Any:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: UnaryCall = handler.unary_unary
        method = handler_call_details.method

        async def wrapped(request: Any, context: Any) -> Any:
            return await self.around(inner, request, context, method)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
