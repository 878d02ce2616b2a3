"""Idempotency-Key references for the public wallet calls.

CreateWallet, FreezeWallet, UnfreezeWallet and CloseWallet take an optional
Idempotency-Key; the key claims a `ledger_references` row named
`wallet-api:<caller>:<key>` in the same transaction as the change. The row
records the wallet the call produced or changed (`wallet_id`, deferred like
the other result ids: it is chosen before CreateWallet's row exists).

The constraints say which result each operation records, that only the
public wallet calls use the `wallet-api:` prefix (internal references never
do, so the two can never collide), and that such a reference may be longer
than an internal one (the caller's id comes before the caller's 255-character key).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WALLET_OPERATIONS = "('CreateWallet', 'FreezeWallet', 'UnfreezeWallet', 'CloseWallet')"

UPGRADE = [
    "ALTER TABLE ledger_references ADD COLUMN wallet_id uuid REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED",
    "ALTER TABLE ledger_references DROP CONSTRAINT ledger_references_result",
    "ALTER TABLE ledger_references DROP CONSTRAINT ledger_references_length",
    f"""
    ALTER TABLE ledger_references
      ADD CONSTRAINT ledger_references_operation CHECK (operation IN (
          'CreateHold', 'CaptureHold', 'ReleaseHold', 'PostTransaction',
          'CreateWallet', 'FreezeWallet', 'UnfreezeWallet', 'CloseWallet')),
      ADD CONSTRAINT ledger_references_result CHECK (
          CASE
              WHEN operation IN ('CreateHold', 'ReleaseHold')
                  THEN hold_id IS NOT NULL AND transaction_id IS NULL AND wallet_id IS NULL
              WHEN operation = 'CaptureHold'
                  THEN hold_id IS NOT NULL AND transaction_id IS NOT NULL AND wallet_id IS NULL
              WHEN operation = 'PostTransaction'
                  THEN transaction_id IS NOT NULL AND hold_id IS NULL AND wallet_id IS NULL
              ELSE wallet_id IS NOT NULL AND hold_id IS NULL AND transaction_id IS NULL
          END),
      ADD CONSTRAINT ledger_references_api_prefix CHECK (
          (left(reference, 11) = 'wallet-api:') = (operation IN {WALLET_OPERATIONS})),
      ADD CONSTRAINT ledger_references_length CHECK (
          length(reference) BETWEEN 1 AND 255
          OR (left(reference, 11) = 'wallet-api:' AND length(reference) <= 1024))
    """,
]

DOWNGRADE = [
    "ALTER TABLE ledger_references DROP CONSTRAINT ledger_references_api_prefix",
    "ALTER TABLE ledger_references DROP CONSTRAINT ledger_references_operation",
    "ALTER TABLE ledger_references DROP CONSTRAINT ledger_references_result",
    "ALTER TABLE ledger_references DROP CONSTRAINT ledger_references_length",
    "ALTER TABLE ledger_references DROP COLUMN wallet_id",
    # Rows of the public wallet calls (references are never deleted) would break the old rules.
    "ALTER TABLE ledger_references ADD CONSTRAINT ledger_references_result"
    " CHECK (hold_id IS NOT NULL OR transaction_id IS NOT NULL) NOT VALID",
    "ALTER TABLE ledger_references ADD CONSTRAINT ledger_references_length"
    " CHECK (length(reference) BETWEEN 1 AND 255) NOT VALID",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
