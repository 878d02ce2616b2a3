"""payment_svc tables (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import MetaData

from paymesh_runtime.outbox import outbox_tables

metadata = MetaData()
outbox, outbox_sequence = outbox_tables(metadata)
