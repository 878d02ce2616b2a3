"""Processor outcomes that are not known yet, and polling the processor for settled payouts and refunds.

Revision ID: 0006
Revises: 0005

`saga_steps.outcome_unknown` records that a step's call may have taken effect
at the processor without paymesh learning the result (a timeout, a lost
connection, a 5xx, or a crash between the call and its commit). It is set
once and never cleared: every later attempt of that step first asks the
processor what happened (find by the step's reference) and acts only on a
definite answer; an unavailable processor then means "ask again later",
never "it failed".

A payout resting PROCESSING and a card refund the processor settles later are
due again at `next_attempt_at`: if their webhook has not come by then, the
recovery worker asks the processor (polls) instead of waiting forever.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATEMENTS = [
    "ALTER TABLE saga_steps ADD COLUMN outcome_unknown boolean NOT NULL DEFAULT false",
    "DROP INDEX refunds_unfinished",
    "CREATE INDEX refunds_unfinished ON refunds (next_attempt_at) WHERE state = 'PENDING'",
    "DROP INDEX payouts_unfinished",
    "CREATE INDEX payouts_unfinished ON payouts (next_attempt_at) WHERE state IN ('PENDING', 'PROCESSING')",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP INDEX payouts_unfinished")
    op.execute(
        """CREATE INDEX payouts_unfinished ON payouts (next_attempt_at)
           WHERE state = 'PENDING' OR (state = 'PROCESSING' AND processor_outcome IS NOT NULL)"""
    )
    op.execute("DROP INDEX refunds_unfinished")
    op.execute(
        """CREATE INDEX refunds_unfinished ON refunds (next_attempt_at)
           WHERE state = 'PENDING' AND processor_outcome IS DISTINCT FROM 'PENDING'"""
    )
    op.execute("ALTER TABLE saga_steps DROP COLUMN outcome_unknown")
