"""Card refunds the processor settles later, and which replica ran each saga step.

Revision ID: 0003
Revises: 0002

A processor may accept a card refund as pending and report success or failure
later by a signed webhook. `processor_outcome` is PENDING while the refund
waits (the recovery worker leaves it alone), then SUCCEEDED or DECLINED once
the webhook stored it; one refund per processor reference.

`saga_steps.worker` names the payment_svc replica that last started a step
(its lease owner id), for operators following a resource across replicas.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    ALTER TABLE refunds
      ADD COLUMN processor_outcome text CHECK (processor_outcome IN ('PENDING','SUCCEEDED','DECLINED')),
      ADD COLUMN processor_decline_code text NOT NULL DEFAULT '',
      ADD CONSTRAINT refunds_processor_ref_unique UNIQUE (processor_ref),
      -- An outcome belongs to a refund the processor knows.
      ADD CONSTRAINT refunds_outcome_has_ref CHECK (processor_outcome IS NULL OR processor_ref IS NOT NULL)
    """,
    "DROP INDEX refunds_unfinished",
    """CREATE INDEX refunds_unfinished ON refunds (next_attempt_at)
       WHERE state = 'PENDING' AND processor_outcome IS DISTINCT FROM 'PENDING'""",
    "ALTER TABLE saga_steps ADD COLUMN worker text NOT NULL DEFAULT ''",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("ALTER TABLE saga_steps DROP COLUMN worker")
    op.execute("DROP INDEX refunds_unfinished")
    op.execute("CREATE INDEX refunds_unfinished ON refunds (next_attempt_at) WHERE state = 'PENDING'")
    op.execute(
        """
        ALTER TABLE refunds
          DROP CONSTRAINT refunds_outcome_has_ref,
          DROP CONSTRAINT refunds_processor_ref_unique,
          DROP COLUMN processor_decline_code,
          DROP COLUMN processor_outcome
        """
    )
