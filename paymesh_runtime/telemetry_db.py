"""Spans of database statements, made only inside a sampled trace.

Two layers reach PostgreSQL: SQLAlchemy Core (its asyncpg dialect runs
prepared statements) and plain asyncpg connections (the money path's batched
statements, and BEGIN/COMMIT under SQLAlchemy too). `instrument_engine` hooks
SQLAlchemy's cursor events; `TracedConnection` is the asyncpg connection class
of both the engine's connections and the pools (paymesh_runtime.db), and
overrides the statement methods. Neither instruments a statement twice: the
dialect's statements go through prepared statements, which TracedConnection
leaves alone.

Cost: a statement outside a sampled trace costs one check of the current span
context's sampled flag (plus SQLAlchemy's event dispatch); OpenTelemetry's
asyncpg and SQLAlchemy instrumentations start a span for every statement,
which the sampler then drops. Spans carry the statement's text (bound
parameters, never their values) truncated to MAX_STATEMENT_LENGTH, and are
never the root of a trace: polls of background loops record nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from opentelemetry.trace import Span, SpanKind
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh_runtime.telemetry_spans import end_with_error, is_sampled, tracer

MAX_STATEMENT_LENGTH = 2000
_SPAN_ATTRIBUTE = "_paymesh_span"


def _operation(statement: str) -> str:
    words = statement.lstrip().split(None, 1)
    return words[0].upper().rstrip(";") if words else "SQL"


def _statement_span(statement: str, database: str, server: tuple[str, int] | None) -> Span:
    span = tracer().start_span(f"{_operation(statement)} {database}".rstrip(), kind=SpanKind.CLIENT)
    span.set_attributes(
        {
            "db.system.name": "postgresql",
            "db.namespace": database,
            "db.operation.name": _operation(statement),
            "db.query.text": statement[:MAX_STATEMENT_LENGTH],
        }
    )
    if server is not None:
        span.set_attributes({"server.address": server[0], "server.port": server[1]})
    return span


def instrument_engine(engine: AsyncEngine) -> AsyncEngine:
    """Spans for the engine's statements inside sampled traces; returns the engine."""
    url = engine.url
    database = url.database or ""
    server = (url.host, url.port or 5432) if url.host else None

    def before(conn: Connection, cursor: Any, statement: str, params: Any, context: ExecutionContext, *_: Any) -> None:
        if is_sampled():
            setattr(context, _SPAN_ATTRIBUTE, _statement_span(statement, database, server))

    def after(conn: Connection, cursor: Any, statement: str, params: Any, context: ExecutionContext, *_: Any) -> None:
        span: Span | None = getattr(context, _SPAN_ATTRIBUTE, None)
        if span is not None:
            span.end()

    def failed(error: Any) -> None:
        span: Span | None = getattr(error.execution_context, _SPAN_ATTRIBUTE, None)
        if span is not None:
            end_with_error(span, error.original_exception)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    event.listen(engine.sync_engine, "handle_error", failed)
    return engine


class TracedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose statements get spans inside sampled traces."""

    def _span(self, query: str) -> Span:
        params = self._params
        address = self._addr if isinstance(self._addr, tuple) else None
        return _statement_span(query, params.database or "", address)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        if not is_sampled():
            return await super().execute(query, *args, **kwargs)  # type: ignore[no-any-return]
        return await self._traced(query, super().execute(query, *args, **kwargs))  # type: ignore[no-any-return]

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        if not is_sampled():
            return await super().executemany(command, args, **kwargs)  # type: ignore[no-any-return]
        return await self._traced(command, super().executemany(command, args, **kwargs))  # type: ignore[no-any-return]

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        if not is_sampled():
            return await super().fetch(query, *args, **kwargs)  # type: ignore[no-any-return]
        return await self._traced(query, super().fetch(query, *args, **kwargs))  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        if not is_sampled():
            return await super().fetchrow(query, *args, **kwargs)
        return await self._traced(query, super().fetchrow(query, *args, **kwargs))

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        if not is_sampled():
            return await super().fetchval(query, *args, **kwargs)
        return await self._traced(query, super().fetchval(query, *args, **kwargs))

    async def _traced(self, query: str, statement: Any) -> Any:
        span = self._span(query)
        try:
            result = await statement
        except BaseException as error:
            end_with_error(span, error)
            raise
        span.end()
        return result
