"""One round trip per stage of a batch of wallet payments.

Revision ID: 0008
Revises: 0007

A batch's first stage is one statement (payment_svc.transfer_store); its last
stage is this function: every state change, step result, idempotency answer
and event of the batch, and the leases of what must be retried, in one call.
It takes the time of the change from the caller (the same instant the events
and answers it stores carry), and the transitions trigger now records each
transition at the row's `update_time`, which every state change sets: for
the saga's statements that is still now(), for a batch the caller's time (a
change that does not set it, made by hand, is recorded at now()).
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RESOURCES = {
    "payments": ("payment", "payment_id"),
    "refunds": ("refund", "refund_id"),
    "payouts": ("payout", "payout_id"),
}


def _transition_function(table: str, kind: str, id_column: str, time: str) -> str:
    # DDL built from the constants above, no input.
    return f"""
        CREATE OR REPLACE FUNCTION {table}_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
            INSERT INTO transitions (resource_type, resource_id, from_state, to_state, reason, time)
            VALUES ('{kind}', NEW.{id_column}, CASE WHEN TG_OP = 'INSERT' THEN '' ELSE OLD.state END,
                    NEW.state, NEW.state_reason, {time});
          END IF;
          RETURN NULL;
        END $$
        """  # noqa: S608


FINISH_TRANSFERS = """
CREATE FUNCTION finish_wallet_transfers(
  p_owner text,
  p_at timestamptz,
  -- every payment with a definitive answer: posted (PENDING -> PROCESSING -> SUCCEEDED) or refused
  -- (PENDING -> FAILED); its wallet transaction, failure, and the serialized answer its key records
  p_ids uuid[], p_posted boolean[], p_result_refs text[], p_failure_codes text[], p_failure_messages text[],
  p_answers bytea[],
  -- their events, in order, each with its aggregate's expected sequence number
  p_event_ids uuid[], p_event_topics text[], p_event_shards smallint[], p_event_aggregates text[],
  p_event_types text[], p_event_payloads bytea[], p_event_headers jsonb[], p_event_sequences bigint[],
  -- payments without a definitive answer: back to the recovery worker after p_retry_after
  p_unknown uuid[], p_retry_after interval
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  finished uuid[];
  sequenced integer;
  expected integer;
BEGIN
  UPDATE payments p
  SET state = 'PROCESSING', state_reason = 'transfer_posted', update_time = p_at
  FROM unnest(p_ids, p_posted) AS i(id, posted)
  WHERE p.payment_id = i.id AND i.posted AND p.state = 'PENDING' AND p.lease_owner = p_owner;

  WITH i AS (
    SELECT * FROM unnest(p_ids, p_posted, p_failure_codes, p_failure_messages)
      AS t(id, posted, failure_code, failure_message)
  ), moved AS (
    UPDATE payments p
    SET state = CASE WHEN i.posted THEN 'SUCCEEDED' ELSE 'FAILED' END,
        state_reason = CASE WHEN i.posted THEN 'captured' ELSE i.failure_code END,
        failure_code = i.failure_code, failure_message = i.failure_message,
        amount_captured = CASE WHEN i.posted THEN p.amount ELSE 0 END,
        update_time = p_at, lease_owner = NULL, lease_expires_at = NULL
    FROM i
    WHERE p.payment_id = i.id AND p.lease_owner = p_owner
      AND p.state = CASE WHEN i.posted THEN 'PROCESSING' ELSE 'PENDING' END
    RETURNING p.payment_id
  )
  SELECT coalesce(array_agg(payment_id), '{}') INTO finished FROM moved;

  UPDATE saga_steps s
  SET status = CASE WHEN i.posted THEN 'DONE' ELSE 'FAILED' END, result_ref = i.result_ref,
      detail = i.failure_code, updated_at = p_at
  FROM unnest(p_ids, p_posted, p_result_refs, p_failure_codes) AS i(id, posted, result_ref, failure_code)
  WHERE s.resource_id = i.id AND s.step = 'transfer' AND i.id = ANY(finished);

  UPDATE idempotency_keys k
  SET state = 'DONE', response_code = 0, response_body = i.answer, completed_at = p_at
  FROM unnest(p_ids, p_answers) AS i(id, answer)
  WHERE k.resource_id = i.id AND k.state = 'IN_PROGRESS' AND i.id = ANY(finished);

  -- The batch wrote each payment's first event (sequence 1); nothing else can have written one since,
  -- as the batch held the lease. Anything else is a bug: raise, and nothing of the batch is stored.
  WITH counts AS (
    SELECT aggregate, count(*) AS n, max(sequence) AS last
    FROM unnest(p_event_aggregates, p_event_sequences) AS e(aggregate, sequence)
    WHERE aggregate::uuid = ANY(finished)
    GROUP BY aggregate
  ), bumped AS (
    UPDATE outbox_sequence o SET last_sequence = c.last
    FROM counts c
    WHERE o.aggregate_id = c.aggregate AND o.last_sequence = c.last - c.n
    RETURNING o.aggregate_id
  )
  SELECT (SELECT count(*) FROM bumped), (SELECT count(*) FROM counts) INTO sequenced, expected;
  IF sequenced <> expected THEN
    RAISE EXCEPTION 'outbox sequences moved under a batch of wallet payments (% of % as expected)',
      sequenced, expected;
  END IF;

  INSERT INTO outbox (event_id, topic, shard, aggregate_id, event_type, payload, headers, created_at)
  SELECT e.id, e.topic, e.shard, e.aggregate, e.type, e.payload, e.headers, p_at
  FROM unnest(p_event_ids, p_event_topics, p_event_shards, p_event_aggregates, p_event_types, p_event_payloads,
              p_event_headers) AS e(id, topic, shard, aggregate, type, payload, headers)
  WHERE e.aggregate::uuid = ANY(finished);

  UPDATE payments
  SET lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = p_at + p_retry_after, attempts = attempts + 1
  WHERE payment_id = ANY(p_unknown) AND lease_owner = p_owner;

  RETURN finished;
END $$
"""


def upgrade() -> None:
    for table, (kind, id_column) in RESOURCES.items():
        # A statement that changes the state without setting update_time (by hand) still gets now().
        at = "CASE WHEN TG_OP = 'UPDATE' AND NEW.update_time = OLD.update_time THEN now() ELSE NEW.update_time END"
        op.execute(_transition_function(table, kind, id_column, at))
    op.execute(FINISH_TRANSFERS)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION finish_wallet_transfers(text, timestamptz, uuid[], boolean[], text[], text[], text[], bytea[],"
        " uuid[], text[], smallint[], text[], text[], bytea[], jsonb[], bigint[], uuid[], interval)"
    )
    for table, (kind, id_column) in RESOURCES.items():
        op.execute(_transition_function(table, kind, id_column, "now()"))
