"""Spans of outgoing HTTP calls (the card processor's API), made only inside a sampled trace.

`traced_transport()` is an httpx transport for `httpx.AsyncClient(transport=...)`:
inside a sampled trace each request gets a CLIENT span (`POST`, with the
method, the server, the path without its query string and the status code);
outside one it costs one check of the current span context. The trace context
is not sent to the remote side: the processor is a third party.
"""

from __future__ import annotations

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode

from paymesh_runtime.telemetry_spans import end_with_error, is_sampled, tracer


class TracedTransport(httpx.AsyncBaseTransport):
    """Wraps another transport; see the module docstring."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not is_sampled():
            return await self._inner.handle_async_request(request)
        url = request.url
        span = tracer().start_span(request.method, kind=SpanKind.CLIENT)
        span.set_attributes(
            {
                "http.request.method": request.method,
                "server.address": url.host,
                "server.port": url.port or (443 if url.scheme == "https" else 80),
                # The path only: a query string may carry what no trace should keep.
                "url.path": url.path,
                "url.scheme": url.scheme,
            }
        )
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as error:
            end_with_error(span, error)
            raise
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
        span.end()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def traced_transport(**options: object) -> TracedTransport:
    """httpx's own transport (with `options`, e.g. retries=0) wrapped in TracedTransport."""
    return TracedTransport(httpx.AsyncHTTPTransport(**options))  # type: ignore[arg-type]
