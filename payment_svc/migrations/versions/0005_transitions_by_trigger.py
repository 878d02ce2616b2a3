"""Every state change of a payment, refund or payout is recorded by the database itself.

Revision ID: 0005
Revises: 0004

A trigger on each resource table appends the row's transition (from, to,
reason, time) whenever its state is set: at INSERT (from '') and at every
UPDATE that changes it. The reason travels in `state_reason`, written by the
same statement that changes the state, so no state change can be stored
without its transition, and payment_svc needs no statement of its own for it.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# table -> (resource type in `transitions`, id column)
RESOURCES = {
    "payments": ("payment", "payment_id"),
    "refunds": ("refund", "refund_id"),
    "payouts": ("payout", "payout_id"),
}


def upgrade() -> None:
    for table, (kind, id_column) in RESOURCES.items():
        op.execute(f"ALTER TABLE {table} ADD COLUMN state_reason text NOT NULL DEFAULT ''")
        # DDL built from the constants above, no input.
        op.execute(
            f"""
            CREATE FUNCTION {table}_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
                INSERT INTO transitions (resource_type, resource_id, from_state, to_state, reason, time)
                VALUES ('{kind}', NEW.{id_column}, CASE WHEN TG_OP = 'INSERT' THEN '' ELSE OLD.state END,
                        NEW.state, NEW.state_reason, now());
              END IF;
              RETURN NULL;
            END $$
            """  # noqa: S608
        )
        op.execute(
            f"""
            CREATE TRIGGER {table}_transition AFTER INSERT OR UPDATE OF state ON {table}
            FOR EACH ROW EXECUTE FUNCTION {table}_record_transition()
            """
        )


def downgrade() -> None:
    for table in RESOURCES:
        op.execute(f"DROP TRIGGER {table}_transition ON {table}")
        op.execute(f"DROP FUNCTION {table}_record_transition()")
        op.execute(f"ALTER TABLE {table} DROP COLUMN state_reason")
