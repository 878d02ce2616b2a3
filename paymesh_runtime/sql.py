"""PostgreSQL statements compiled once, for the hot paths.

SQLAlchemy 2.0 does not cache the compilation of the PostgreSQL dialect's
INSERT (its `Insert` sets `inherit_cache = False`, sqlalchemy#10445, because
the ON CONFLICT clause has no cache key), so every INSERT ... ON CONFLICT is
compiled again on each execution: a few hundred microseconds of CPU, several
times per payment. `compiled_once` turns such a statement, written with
`bindparam()` placeholders, into the equivalent `text()` statement, which
SQLAlchemy caches; the parameters keep their names and types, and literal
values in the statement keep their values. Plain INSERTs should use
`sqlalchemy.insert`, which is cached already.
"""

from __future__ import annotations

import re

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import UpdateBase

_DIALECT = postgresql.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
# text() does not see `:name` followed by a `::type` cast as a parameter; CAST() says the same.
_BIND_CAST = re.compile(r":(\w+)::(\w+(?:\[\])?)")


def compiled_once(statement: UpdateBase) -> TextClause:
    """The statement as a text() that SQLAlchemy compiles once and caches."""
    compiled = statement.compile(dialect=_DIALECT)
    sql = _BIND_CAST.sub(r"CAST(:\1 AS \2)", str(compiled))
    params = [
        bindparam(name, value=param.value, type_=param.type, required=param.required)
        for param, name in compiled.bind_names.items()
    ]
    return text(sql).bindparams(*params)
