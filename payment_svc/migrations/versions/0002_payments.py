"""Payments, refunds, payouts, their transitions, the saga step log, idempotency keys, webhook dedup.

Revision ID: 0002
Revises: 0001

Every money invariant of payment_svc is a constraint here: amounts positive,
captured <= authorized, refunds (pending + succeeded) <= captured, one source
per payment, one row per idempotency key and caller, one step row per saga
step and one use of each external reference.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PAYMENT_STATES = "'PENDING','REQUIRES_CAPTURE','PROCESSING','SUCCEEDED','FAILED','CANCELED'"

# Columns that let one replica at a time work a resource (a lease) and the
# recovery worker find and retry it later.
WORK_COLUMNS = """
  lease_owner text,
  lease_expires_at timestamptz,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
"""

STATEMENTS = [
    f"""
    CREATE TABLE payments (
      payment_id uuid PRIMARY KEY,
      payer_id text NOT NULL,
      payee_id text NOT NULL,
      source_wallet_id text,
      card_token text,
      destination_wallet_id text NOT NULL,
      currency char(3) NOT NULL,
      amount bigint NOT NULL CHECK (amount > 0),
      amount_captured bigint NOT NULL DEFAULT 0,
      refund_reserved bigint NOT NULL DEFAULT 0,
      amount_refunded bigint NOT NULL DEFAULT 0,
      capture_method text NOT NULL CHECK (capture_method IN ('AUTOMATIC','MANUAL')),
      capture_requested bigint,
      state text NOT NULL CHECK (state IN ({PAYMENT_STATES})),
      description text NOT NULL DEFAULT '',
      failure_code text NOT NULL DEFAULT '',
      failure_message text NOT NULL DEFAULT '',
      capture_before timestamptz,
      hold_id text,
      authorization_ref text,
      requested_action text CHECK (requested_action IN ('CANCEL')),
      action_reason text NOT NULL DEFAULT '',
      {WORK_COLUMNS}
      create_time timestamptz NOT NULL DEFAULT now(),
      update_time timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT payments_one_source CHECK ((source_wallet_id IS NULL) <> (card_token IS NULL)),
      CONSTRAINT payments_captured_within_amount CHECK (amount_captured >= 0 AND amount_captured <= amount),
      CONSTRAINT payments_refunds_within_captured CHECK (refund_reserved >= 0 AND refund_reserved <= amount_captured),
      CONSTRAINT payments_refunded_within_reserved CHECK (amount_refunded >= 0 AND amount_refunded <= refund_reserved),
      CONSTRAINT payments_capture_within_amount
        CHECK (capture_requested IS NULL OR (capture_requested > 0 AND capture_requested <= amount))
    )
    """,
    "CREATE INDEX payments_by_payer ON payments (payer_id, create_time DESC, payment_id DESC)",
    "CREATE INDEX payments_by_payee ON payments (payee_id, create_time DESC, payment_id DESC)",
    "CREATE INDEX payments_by_time ON payments (create_time DESC, payment_id DESC)",
    """CREATE INDEX payments_unfinished ON payments (next_attempt_at)
       WHERE state IN ('PENDING','PROCESSING') OR requested_action IS NOT NULL""",
    "CREATE INDEX payments_capture_expiry ON payments (capture_before) WHERE state = 'REQUIRES_CAPTURE'",
    f"""
    CREATE TABLE refunds (
      refund_id uuid PRIMARY KEY,
      payment_id uuid NOT NULL REFERENCES payments (payment_id),
      requested_by text NOT NULL,
      currency char(3) NOT NULL,
      amount bigint NOT NULL CHECK (amount > 0),
      reason text NOT NULL DEFAULT '',
      state text NOT NULL CHECK (state IN ('PENDING','SUCCEEDED','FAILED')),
      failure_code text NOT NULL DEFAULT '',
      processor_ref text,
      {WORK_COLUMNS}
      create_time timestamptz NOT NULL DEFAULT now(),
      update_time timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX refunds_by_payment ON refunds (payment_id, create_time, refund_id)",
    "CREATE INDEX refunds_unfinished ON refunds (next_attempt_at) WHERE state = 'PENDING'",
    f"""
    CREATE TABLE payouts (
      payout_id uuid PRIMARY KEY,
      wallet_id text NOT NULL,
      owner_id text NOT NULL,
      currency char(3) NOT NULL,
      amount bigint NOT NULL CHECK (amount > 0),
      bank_account_token text NOT NULL,
      state text NOT NULL CHECK (state IN ('PENDING','PROCESSING','SUCCEEDED','FAILED')),
      failure_code text NOT NULL DEFAULT '',
      hold_id text,
      processor_ref text UNIQUE,
      processor_outcome text CHECK (processor_outcome IN ('SUCCEEDED','DECLINED')),
      processor_decline_code text NOT NULL DEFAULT '',
      {WORK_COLUMNS}
      create_time timestamptz NOT NULL DEFAULT now(),
      update_time timestamptz NOT NULL DEFAULT now()
    )
    """,
    """CREATE INDEX payouts_unfinished ON payouts (next_attempt_at)
       WHERE state = 'PENDING' OR (state = 'PROCESSING' AND processor_outcome IS NOT NULL)""",
    """
    CREATE TABLE transitions (
      transition_id bigserial PRIMARY KEY,
      resource_type text NOT NULL CHECK (resource_type IN ('payment','refund','payout')),
      resource_id uuid NOT NULL,
      from_state text NOT NULL,
      to_state text NOT NULL,
      reason text NOT NULL DEFAULT '',
      time timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX transitions_by_resource ON transitions (resource_id, transition_id)",
    """
    CREATE TABLE saga_steps (
      resource_id uuid NOT NULL,
      step text NOT NULL,
      reference text NOT NULL UNIQUE,
      status text NOT NULL CHECK (status IN ('STARTED','DONE','FAILED')),
      result_ref text NOT NULL DEFAULT '',
      detail text NOT NULL DEFAULT '',
      attempts integer NOT NULL DEFAULT 1,
      started_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (resource_id, step)
    )
    """,
    """
    CREATE TABLE idempotency_keys (
      caller_id text NOT NULL,
      idempotency_key text NOT NULL,
      method text NOT NULL,
      fingerprint bytea NOT NULL,
      resource_id uuid NOT NULL,
      state text NOT NULL CHECK (state IN ('IN_PROGRESS','DONE')),
      response_code integer,
      response_body bytea,
      created_at timestamptz NOT NULL DEFAULT now(),
      completed_at timestamptz,
      expires_at timestamptz NOT NULL,
      PRIMARY KEY (caller_id, idempotency_key),
      CONSTRAINT idempotency_keys_done_has_response
        CHECK (state = 'IN_PROGRESS' OR (response_code IS NOT NULL AND response_body IS NOT NULL))
    )
    """,
    "CREATE INDEX idempotency_keys_open ON idempotency_keys (resource_id) WHERE state = 'IN_PROGRESS'",
    "CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)",
    """
    CREATE TABLE processor_webhook_events (
      processor text NOT NULL,
      event_id text NOT NULL,
      event_type text NOT NULL,
      processor_ref text NOT NULL,
      received_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (processor, event_id)
    )
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "processor_webhook_events",
        "idempotency_keys",
        "saga_steps",
        "transitions",
        "payouts",
        "refunds",
        "payments",
    ):
        op.execute(f"DROP TABLE {table}")
