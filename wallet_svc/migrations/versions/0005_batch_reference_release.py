"""A transaction may take back the references it claimed itself, before it commits.

PostTransactions claims the references of all its items first (before any
account lock, in reference order, as every call claims before it locks), then
judges the items; an item it refuses must leave its reference free, as a
refused PostTransaction does. So a transaction may DELETE a `ledger_references`
row it inserted itself: the row is then as if never written. Every row another
transaction wrote, committed or not, stays immutable: no UPDATE ever, no
DELETE by anyone else. "Inserted by this transaction" is the row's xmin being
this transaction's id and its created_at this transaction's start time (the
second rules out an ancient row whose 32-bit xmin came round again).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = [
    """
CREATE FUNCTION ledger_references_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.xmin = pg_current_xact_id()::xid AND OLD.created_at = now() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'ledger_references rows are immutable'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_references_immutable';
END $$
""",
    "DROP TRIGGER ledger_references_immutable ON ledger_references",
    "CREATE TRIGGER ledger_references_immutable BEFORE UPDATE OR DELETE ON ledger_references"
    " FOR EACH ROW EXECUTE FUNCTION ledger_references_guard()",
]

DOWNGRADE = [
    "DROP TRIGGER ledger_references_immutable ON ledger_references",
    "CREATE TRIGGER ledger_references_immutable BEFORE UPDATE OR DELETE ON ledger_references"
    " FOR EACH ROW EXECUTE FUNCTION ledger_immutable()",
    "DROP FUNCTION ledger_references_guard()",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
