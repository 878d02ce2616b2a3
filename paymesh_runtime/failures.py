"""What an unexpected exception means, and how it may be logged.

`unavailable_dependency` tells an outage (PostgreSQL down, restarting or
refusing connections; Redis unreachable) from a bug: the error mapper answers
the first with UNAVAILABLE (DEPENDENCY_UNAVAILABLE), which clients retry, and
only the second with INTERNAL. Outages are recognised by type and SQLSTATE
wherever they surface: SQLAlchemy's wrappers (DBAPIError with
connection_invalidated, OperationalError, pool timeouts), asyncpg's own errors
(ConnectionDoesNotExistError, CannotConnectNowError, TooManyConnectionsError,
InterfaceError...), a bare OSError from a connect call, redis-py's
ConnectionError and TimeoutError.

`loggable_traceback` formats an exception chain as a traceback whose database
errors carry their SQLSTATE and statement, never their message: asyncpg's
messages quote query arguments ("invalid input for query argument $1: ...")
and PostgreSQL's quote values ('invalid input syntax for type uuid: "..."'),
and those may be password hashes, tokens or emails.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from types import TracebackType

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from asyncpg.exceptions import _base as asyncpg_base

from paymesh_runtime.errors import shorten

# The `dependency` metadata of DEPENDENCY_UNAVAILABLE.
POSTGRESQL = "postgresql"
REDIS = "redis"
NETWORK = "network"  # a connection refused or timed out, by no library paymesh knows

# SQLSTATEs of a server that cannot serve right now, rather than of a statement that is wrong:
# class 08 (connection exception), class 53 (insufficient resources: too many connections, out of
# memory or disk), admin or crash shutdown, "the database system is starting up", an idle-session
# timeout, a statement or lock timeout (lock_timeout and statement_timeout in paymesh_runtime.db).
_OUTAGE_CLASSES = ("08", "53")
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "57014", "55P03"})
# asyncpg's client-side errors about the call itself (a bad argument, a bad configuration): bugs.
_CLIENT_MISUSE = (
    asyncpg_base.DataError,
    asyncpg_base.ClientConfigurationError,
    asyncpg_base.UnsupportedClientFeatureError,
)
# What a statement on a connection of one's own raises when the database goes away under it: a refused or
# reset socket, the server's own errors, a closed connection, or (InternalClientError) a protocol asyncpg left
# in its "failed" state when the connection was lost between two statements on it.
DATABASE_FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
_LOST_PROTOCOL = 'protocol is in the "failed" state'
_REDIS_OUTAGES = (
    redis.exceptions.ConnectionError,  # also BusyLoadingError, AuthenticationError, MaxConnectionsError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica being promoted
    redis.exceptions.MasterDownError,
)
_LIBRARY_OF_MODULE = (("asyncpg", POSTGRESQL), ("sqlalchemy", POSTGRESQL), ("redis", REDIS))
MAX_STATEMENT = 300
MAX_MESSAGE = 200


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, then what it wraps: SQLAlchemy's `orig`, then each explicit `raise ... from`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return state if isinstance(state, str) else None


def _is_outage_state(state: str) -> bool:
    return state.startswith(_OUTAGE_CLASSES) or state in _OUTAGE_STATES


def _origin(error: BaseException) -> str:
    """Which dependency a bare OSError came from: the innermost library frame it was raised through."""
    found = NETWORK
    tb: TracebackType | None = error.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for prefix, dependency in _LIBRARY_OF_MODULE:
            if module == prefix or module.startswith(prefix + "."):
                found = dependency
        tb = tb.tb_next
    return found


def unavailable_dependency(error: BaseException) -> str | None:
    """The dependency whose outage `error` is (POSTGRESQL, REDIS, NETWORK), or None for anything else."""
    for cause in _causes(error):
        if isinstance(cause, _REDIS_OUTAGES):
            return REDIS
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
            return POSTGRESQL
        if isinstance(cause, sqlalchemy.exc.TimeoutError):  # no pooled connection came free in time
            return POSTGRESQL
        if isinstance(cause, _CLIENT_MISUSE):
            return None
        if isinstance(cause, asyncpg.InterfaceError):  # "connection is closed" and kin
            return POSTGRESQL
        if isinstance(cause, asyncpg.InternalClientError) and _LOST_PROTOCOL in str(cause):
            return POSTGRESQL  # any other InternalClientError ("another operation is in progress") is a bug
        state = sqlstate(cause)
        if state is not None and _is_outage_state(state):
            return POSTGRESQL
        if isinstance(cause, OSError):  # refused, reset, unreachable, timed out (TimeoutError is an OSError)
            return _origin(cause)
    return None


def _is_database_error(error: BaseException) -> bool:
    module = type(error).__module__
    return module.startswith(("asyncpg", "sqlalchemy")) or isinstance(error, sqlalchemy.exc.SQLAlchemyError)


def _safe_message(error: BaseException) -> str:
    if not _is_database_error(error):
        return shorten(str(error), MAX_MESSAGE)
    state, statement = sqlstate(error), getattr(error, "statement", None)
    parts = [f"SQLSTATE {state}"] if state else []
    if isinstance(statement, str):
        parts.append(f"statement: {shorten(' '.join(statement.split()), MAX_STATEMENT)}")
    return "; ".join([*parts, "message withheld: it may quote the statement's parameters"])


def _chain(error: BaseException) -> list[BaseException]:
    """The exceptions Python's traceback would print, innermost cause first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain[::-1]


def loggable_traceback(error: BaseException) -> str:
    """`error`'s traceback with every frame, and with database errors' messages withheld."""
    blocks: list[str] = []
    chain = _chain(error)
    for index, exc in enumerate(chain):
        lines = ["Traceback (most recent call last):\n", *traceback.format_tb(exc.__traceback__)]
        lines.append(f"{type(exc).__module__}.{type(exc).__qualname__}: {_safe_message(exc)}\n")
        blocks.append("".join(lines))
        if index + 1 < len(chain):
            linked = chain[index + 1].__cause__ is exc
            blocks.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if linked
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
    return "".join(blocks).rstrip("\n")


def describe(error: BaseException) -> str:
    """One line for a log: the exception's type and, for a database error, its SQLSTATE only."""
    if _is_database_error(error):
        states = [s for s in (sqlstate(c) for c in _causes(error)) if s]
        return f"{type(error).__name__}" + (f" (SQLSTATE {states[0]})" if states else "")
    return f"{type(error).__name__}: {shorten(str(error), MAX_MESSAGE)}"
