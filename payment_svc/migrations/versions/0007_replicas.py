"""Replica incarnations: a restarted replica resumes its predecessor's work at once.

Revision ID: 0007
Revises: 0006

`replicas` counts the incarnations of each named replica (payment_svc.replica):
a process leases as `<name>#<incarnation>`, and at start gives back every lease
of the name's earlier incarnations, which it proved dead by taking the name's
advisory lock. The partial indexes find the (few) leased rows without scanning
the tables.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    CREATE TABLE replicas (
      replica_id text PRIMARY KEY CHECK (replica_id ~ '^[A-Za-z0-9._-]{1,100}$'),
      incarnation bigint NOT NULL CHECK (incarnation > 0),
      started_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX payments_leased ON payments (lease_owner) WHERE lease_owner IS NOT NULL",
    "CREATE INDEX refunds_leased ON refunds (lease_owner) WHERE lease_owner IS NOT NULL",
    "CREATE INDEX payouts_leased ON payouts (lease_owner) WHERE lease_owner IS NOT NULL",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for index in ("payouts_leased", "refunds_leased", "payments_leased"):
        op.execute(f"DROP INDEX {index}")
    op.execute("DROP TABLE replicas")
