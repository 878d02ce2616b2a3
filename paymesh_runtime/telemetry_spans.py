"""Spans beyond the RPCs: batches, messages, and cheap "only if sampled" children.

Everything here costs next to nothing for a request whose trace is not
sampled: the test is one flag of the current span context (`is_sampled`), or
of a W3C `traceparent` string (`traceparent_sampled`), and nothing is built,
timed or exported after it fails. No span here is ever the root of a trace:
background loops (relay polls, delivery claims, sweepers) would otherwise
fill the backend with traces of their own.

Batches (paymesh_runtime.group_commit: several CreatePayment calls, one
wallet call): `batch_span` makes the batch's span a child of the first
*sampled* request of the batch, so the batch's work (its database statements,
the one wallet_svc call and everything wallet_svc does) lies in that
request's trace; the batch span links to every other sampled request's span,
and each of those requests gets a `<name> member` span in its own trace that
links to the batch span. Each request's events carry its own trace context
(paymesh_runtime.outbox.PendingEvent), so its relay, consumer and email spans
stay in its own trace. docs/observability.md, "Batches", has the picture.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

TRACER_NAME = "paymesh_runtime"
# A batch links to at most this many of its requests (OpenTelemetry's default span limit is 128 links).
MAX_LINKS = 100


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def is_sampled() -> bool:
    """Whether the current trace is recorded."""
    return trace.get_current_span().get_span_context().trace_flags.sampled


def traceparent_sampled(carrier: Mapping[str, str]) -> bool:
    """Whether a W3C trace context (`traceparent` = version-trace-span-flags) says "sampled", without parsing
    the rest of it."""
    header = carrier.get("traceparent", "")
    return len(header) == 55 and header[-1] in "13579bdfBDF"  # the flags' lowest bit


# W3C Trace Context: `tracestate` may hold 32 members of up to 256 characters, but vendors are asked to
# keep it within 512; a longer value, like any other key, is dropped rather than carried on.
TRACE_CONTEXT_KEYS = frozenset({"traceparent", "tracestate"})
MAX_TRACE_CONTEXT_VALUE = 512


def clean_trace_context(received: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context fields of a context another service sent as data (not as headers), without
    anything else: other keys, over-long values and values that are not printable ASCII are dropped."""
    return {
        key: value
        for key, value in received.items()
        if key in TRACE_CONTEXT_KEYS
        and len(value) <= MAX_TRACE_CONTEXT_VALUE
        and value.isascii()
        and value.isprintable()
    }


def child_span(name: str, kind: SpanKind = SpanKind.INTERNAL) -> Span | None:
    """A span under the current one if the current trace is sampled, else None (then do nothing for it)."""
    if not is_sampled():
        return None
    return tracer().start_span(name, kind=kind)


def end_with_error(span: Span, error: BaseException | None) -> None:
    """Ends `span`, marked as failed with `error` if there is one."""
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.record_exception(error)
    span.end()


def span_from_carrier(name: str, carrier: Mapping[str, str], kind: SpanKind) -> Span | None:
    """A span continuing the trace of a stored or received W3C context, if that trace is sampled."""
    if not traceparent_sampled(carrier):
        return None
    return tracer().start_span(name, context=propagate.extract(carrier), kind=kind)


def carrier_of(span: Span) -> dict[str, str]:
    """The W3C trace context (traceparent, tracestate) that makes a receiver's span a child of `span`."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def current_span_context() -> SpanContext:
    return trace.get_current_span().get_span_context()


@contextmanager
def batch_span(name: str, parents: Sequence[SpanContext], size: int) -> Iterator[Span]:
    """The span of a batch made of requests whose span contexts are `parents`, made current (see the module
    docstring); yields it."""
    sampled = [p for p in parents if p.is_valid and p.trace_flags.sampled]
    first = sampled[0] if sampled else next((p for p in parents if p.is_valid), None)
    # The batch runs in a task of its own, whatever context it inherited: its parent is chosen here.
    parent = trace.set_span_in_context(NonRecordingSpan(first)) if first else otel_context.Context()
    spans = tracer()
    span = spans.start_span(
        name,
        context=parent,
        links=[Link(p) for p in sampled[1 : MAX_LINKS + 1]],
        attributes={"paymesh.batch.size": size},
    )
    members = [
        spans.start_span(
            f"{name} member",
            context=trace.set_span_in_context(NonRecordingSpan(p)),
            links=[Link(span.get_span_context())],
            attributes={"paymesh.batch.size": size},
        )
        for p in (sampled[1:] if span.is_recording() else ())
    ]
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    error: BaseException | None = None
    try:
        yield span
    except BaseException as raised:
        error = raised
        raise
    finally:
        otel_context.detach(token)
        for member in members:
            member.end()
        end_with_error(span, error)


class TraceHandoff:
    """Recent sampled trace contexts by key, for work that continues a trace later in the same process.

    notify_svc stores a consumed event's notifications and sends them in a
    later round of its delivery worker, from rows that keep no trace context:
    the consumer hands the trace of each sampled event over here (by event
    id), and the worker's email and webhook spans continue it. Bounded (the
    oldest entries go first); a delivery made by another replica, or after a
    restart, starts no span.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._carriers: dict[str, dict[str, str]] = {}

    def remember(self, key: str, span: Span) -> None:
        if not span.get_span_context().trace_flags.sampled:
            return
        if len(self._carriers) >= self._capacity:
            del self._carriers[next(iter(self._carriers))]  # dicts keep insertion order: the oldest
        self._carriers[key] = carrier_of(span)

    def carrier(self, key: str) -> Mapping[str, str]:
        return self._carriers.get(key, {})


# Consumed events' traces in notify_svc: its consumer remembers, its delivery worker continues them.
EVENT_TRACES = TraceHandoff(capacity=20_000)
