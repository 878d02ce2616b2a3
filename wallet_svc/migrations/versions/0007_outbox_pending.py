"""Outbox rows are written once: the positions not yet published live in outbox_pending.

Revision ID: 0007
Revises: 0006

The relay used to mark each published row (`published_at`), a non-HOT update
of the whole row with three index entries and the vacuum behind it, for every
event. A trigger now adds each new row's position to a small table the relay
deletes from once Kafka has the event (paymesh_runtime/outbox.py,
docs/performance.md "An outbox written once").
"""

from alembic import op

from paymesh_runtime.outbox import create_outbox_pending, drop_outbox_pending

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_pending(op.get_bind())


def downgrade() -> None:
    drop_outbox_pending(op.get_bind())
