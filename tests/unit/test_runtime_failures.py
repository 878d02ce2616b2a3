"""Unexpected exceptions (paymesh_runtime.failures, grpc_errors): an outage of PostgreSQL or Redis is
UNAVAILABLE with reason DEPENDENCY_UNAVAILABLE, anything else INTERNAL; and no log line carries what a
database error quotes of its parameters."""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
import pytest
import redis.exceptions
import sqlalchemy.exc
from asyncpg.exceptions import _base as asyncpg_base
from google.rpc import code_pb2, error_details_pb2

from paymesh_runtime import failures
from paymesh_runtime.grpc_errors import status_for_exception

SECRET = "alice.secret@example.com"
METHOD = "/paymesh.wallet.v1.WalletService/GetWallet"


def _raised(make: Callable[[], BaseException], cause: BaseException | None = None) -> BaseException:
    """An exception as code meets it: raised (with a traceback), optionally `from` a cause."""
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException as inner:
            raise make() from inner
        raise make()
    except BaseException as error:
        return error


def _from_library(module: str, error: BaseException) -> BaseException:
    """`error` raised by a function of `module` (as asyncpg's connect raises a bare OSError)."""
    namespace: dict[str, object] = {"__name__": module, "error": error}
    exec(compile("def connect():\n    raise error\n", f"<{module}>", "exec"), namespace)  # noqa: S102
    try:
        namespace["connect"]()  # type: ignore[operator]
    except BaseException as raised:
        return raised
    raise AssertionError("connect() returned")


def _sqlalchemy(orig: BaseException, *, invalidated: bool = False) -> BaseException:
    return _raised(
        lambda: sqlalchemy.exc.DBAPIError.instance(
            "INSERT INTO users (email) VALUES ($1)",
            (SECRET,),
            orig,  # type: ignore[arg-type]
            asyncpg.PostgresError,
            hide_parameters=True,
            connection_invalidated=invalidated,
        ),
        cause=orig,
    )


OUTAGES: list[tuple[str, Callable[[], BaseException], str]] = [
    (
        "starting up",
        lambda: _raised(lambda: asyncpg.CannotConnectNowError("the database system is starting up")),
        "postgresql",
    ),
    ("shutting down", lambda: _sqlalchemy(asyncpg.AdminShutdownError("terminating connection")), "postgresql"),
    ("too many connections", lambda: _sqlalchemy(asyncpg.TooManyConnectionsError("too many clients")), "postgresql"),
    (
        "connection gone",
        lambda: _raised(lambda: asyncpg.ConnectionDoesNotExistError("connection was closed")),
        "postgresql",
    ),
    (
        "closed (invalidated)",
        lambda: _sqlalchemy(asyncpg.InterfaceError("connection is closed"), invalidated=True),
        "postgresql",
    ),
    ("closed (asyncpg pool)", lambda: _raised(lambda: asyncpg.InterfaceError("connection is closed")), "postgresql"),
    (
        # asyncpg's words when the server vanished between two statements on one connection (chaos seed 34)
        "lost between statements",
        lambda: _raised(
            lambda: asyncpg.InternalClientError('cannot switch to state 13; protocol is in the "failed" state')
        ),
        "postgresql",
    ),
    ("pool timeout", lambda: _raised(lambda: sqlalchemy.exc.TimeoutError("QueuePool limit reached")), "postgresql"),
    (
        "refused at connect",
        lambda: _from_library("asyncpg.connect_utils", ConnectionRefusedError(111, "refused")),
        "postgresql",
    ),
    (
        "statement timeout",
        lambda: _sqlalchemy(asyncpg.QueryCanceledError("canceling statement due to statement timeout")),
        "postgresql",
    ),
    ("redis refused", lambda: _raised(lambda: redis.exceptions.ConnectionError("Error 111 connecting")), "redis"),
    ("redis timeout", lambda: _raised(lambda: redis.exceptions.TimeoutError("Timeout reading")), "redis"),
    ("redis loading", lambda: _raised(lambda: redis.exceptions.BusyLoadingError("loading")), "redis"),
    ("bare refusal", lambda: _raised(lambda: ConnectionRefusedError(111, "refused")), "network"),
]


@pytest.mark.parametrize(("label", "make", "dependency"), OUTAGES, ids=[o[0] for o in OUTAGES])
def test_an_outage_is_unavailable_with_dependency_unavailable(
    label: str, make: Callable[[], BaseException], dependency: str
) -> None:
    error = make()
    assert failures.unavailable_dependency(error) == dependency
    status = status_for_exception(error, METHOD)  # type: ignore[arg-type]
    assert status.code == code_pb2.UNAVAILABLE
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.metadata["dependency"]) == ("DEPENDENCY_UNAVAILABLE", dependency)


BUGS: list[tuple[str, Callable[[], BaseException]]] = [
    ("unique violation", lambda: _sqlalchemy(asyncpg.UniqueViolationError("duplicate key"))),
    ("NUL in text", lambda: _sqlalchemy(asyncpg.CharacterNotInRepertoireError("invalid byte sequence"))),
    ("bad argument", lambda: _sqlalchemy(asyncpg_base.DataError(f"invalid input for query argument $1: {SECRET!r}"))),
    ("value error", lambda: _raised(lambda: ValueError("Invalid isoformat string"))),
    ("redis wrong type", lambda: _raised(lambda: redis.exceptions.ResponseError("WRONGTYPE"))),
    (
        "one connection used twice at once",
        lambda: _raised(
            lambda: asyncpg.InternalClientError("cannot switch to state 13; another operation (2) is in progress")
        ),
    ),
]


@pytest.mark.parametrize(("label", "make"), BUGS, ids=[b[0] for b in BUGS])
def test_anything_else_is_internal(label: str, make: Callable[[], BaseException]) -> None:
    error = make()
    assert failures.unavailable_dependency(error) is None
    assert status_for_exception(error, METHOD).code == code_pb2.INTERNAL  # type: ignore[arg-type]


def test_the_logged_traceback_withholds_what_database_errors_quote(caplog: pytest.LogCaptureFixture) -> None:
    # asyncpg quotes a bad argument; PostgreSQL quotes a bad value; SQLAlchemy (hide_parameters) does not.
    client_side = asyncpg_base.DataError(f"invalid input for query argument $1: {SECRET!r} (expected str)")
    server_side = asyncpg.InvalidTextRepresentationError(f'invalid input syntax for type uuid: "{SECRET}"')
    for orig in (client_side, server_side):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="paymesh_runtime.grpc_errors"):
            status_for_exception(_sqlalchemy(orig), METHOD)  # type: ignore[arg-type]
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert all(record.exc_info is None for record in caplog.records)  # no formatter prints the message
        assert SECRET not in logged
        assert "Traceback (most recent call last)" in logged
        assert "INSERT INTO users (email) VALUES ($1)" in logged  # the statement, for whoever debugs
        if isinstance(orig, asyncpg.PostgresError):
            assert f"SQLSTATE {orig.sqlstate}" in logged
        assert "test_runtime_failures.py" in logged  # every frame is there


def test_a_warning_for_an_outage_names_the_dependency_and_nothing_it_was_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="paymesh_runtime.grpc_errors"):
        status_for_exception(
            _sqlalchemy(asyncpg.AdminShutdownError("terminating connection"), invalidated=True), METHOD
        )  # type: ignore[arg-type]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "postgresql" in record.getMessage()
    assert SECRET not in record.getMessage()
