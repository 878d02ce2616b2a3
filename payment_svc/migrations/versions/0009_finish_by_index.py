"""A batch's closing call finds its rows by index, whatever the tables' size when it was planned.

Revision ID: 0009
Revises: 0008

finish_wallet_transfers (migration 0008) looks up a batch's payments, saga
steps, idempotency keys and outbox sequences by their keys. PL/pgSQL keeps
each statement's plan for the life of the connection, and a pooled
connection lives long: planned while those tables were nearly empty (a new
deployment's first payments), the plan joins them by scanning the whole
table, and goes on doing so as the tables grow, until an automatic ANALYZE
happens to invalidate it. On a fresh database that is every payment of the
first minute or so: at 2,000 payments the call spent 0.30 ms scanning
saga_steps and 0.18 ms scanning outbox_sequence (pg_stat_statements with
track=all, 2,194 sequential scans reading 2.5 million rows in a 30 s run at
one payment in flight). No statement of the function needs a sequential
scan, so its planner may not choose one.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SIGNATURE = (
    "finish_wallet_transfers(text, timestamptz, uuid[], boolean[], text[], text[], text[], bytea[], uuid[], text[],"
    " smallint[], text[], text[], bytea[], jsonb[], bigint[], uuid[], interval)"
)


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET enable_seqscan = off")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {SIGNATURE} RESET enable_seqscan")
