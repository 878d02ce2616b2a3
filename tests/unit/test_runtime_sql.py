"""paymesh_runtime.sql: an INSERT ... ON CONFLICT compiled once, with its parameters intact."""

from __future__ import annotations

from sqlalchemy import Column, Integer, Interval, MetaData, String, Table, bindparam, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import UUID, insert

from paymesh_runtime.sql import compiled_once

metadata = MetaData()
counters = Table(
    "counters",
    metadata,
    Column("counter_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String, nullable=False),
    Column("value", Integer, nullable=False),
)


def _upsert() -> object:
    statement = insert(counters).values(counter_id=bindparam("counter_id"), name=bindparam("name"), value=1)
    return statement.on_conflict_do_update(
        index_elements=["counter_id"], set_={"value": counters.c.value + 1, "name": statement.excluded.name}
    ).returning(counters.c.value)


def test_the_dialects_upsert_has_no_cache_key_but_its_compiled_text_has() -> None:
    upsert = _upsert()
    assert upsert._generate_cache_key() is None  # type: ignore[attr-defined]  # what compiled_once is for
    assert compiled_once(upsert)._generate_cache_key() is not None  # type: ignore[arg-type]


def test_the_text_renders_the_statements_sql_for_asyncpg_with_typed_parameters() -> None:
    frozen = str(compiled_once(_upsert()).compile(dialect=postgresql.asyncpg.dialect()))  # type: ignore[arg-type,no-untyped-call]
    assert frozen.startswith(
        "INSERT INTO counters (counter_id, name, value) VALUES (CAST($1::UUID AS UUID), $2::VARCHAR"
    )
    assert "ON CONFLICT (counter_id) DO UPDATE SET" in frozen
    assert "name = excluded.name" in frozen
    assert "value = (counters.value + $4::INTEGER)" in frozen
    assert frozen.endswith("RETURNING counters.value")


def test_literal_values_in_the_statement_are_kept_as_parameter_defaults() -> None:
    statement = insert(counters).values(
        counter_id=bindparam("counter_id"), name=func.concat("n", bindparam("gap", type_=Interval)), value=7
    )
    frozen = compiled_once(statement.on_conflict_do_nothing())
    params = frozen._bindparams  # type: ignore[attr-defined]
    assert params["counter_id"].required
    assert isinstance(params["counter_id"].type, UUID)
    assert isinstance(params["gap"].type, Interval)
    assert [p.value for name, p in params.items() if name.startswith("value")] == [7]
