"""A batch of wallet payments closes each payment with one update, and its idempotency key's answer is a HOT update.

Revision ID: 0011
Revises: 0010

Migration 0009's `finish_wallet_transfers` moved each posted payment twice,
PENDING -> PROCESSING and then PROCESSING -> SUCCEEDED, so that the
transitions trigger would record the PROCESSING step. Each update wrote a
new version of the row and, as `state` and `lease_owner` are in index
predicates, an entry in each of its indexes: six for the first, four for the
second (docs/performance.md, "Where a lone payment's CPU goes"). The function
now moves a posted payment straight to SUCCEEDED, and the payments trigger
records a PENDING -> SUCCEEDED change as the two steps it stands for:
PENDING -> PROCESSING (`transfer_posted`) and PROCESSING -> SUCCEEDED (the
row's reason), at one instant. No other path makes that change (the
lifecycle has no PENDING -> SUCCEEDED edge: payment_svc.lifecycle), and the
trigger still records every state change, whoever makes it.

The idempotency key's answer changed `state`, the predicate of
`idempotency_keys_open`, so it was never a HOT update either: a full index on
`resource_id` serves the same lookups (by resource, then the state), and a
fillfactor of 70 leaves each page room for its rows' answers. The fillfactor
applies to pages filled from now on.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The time of a change: the row's update_time, which every state change of payment_svc sets (a batch's is the
# caller's instant, the one its events carry); a change made by hand that does not set it gets now().
_AT = "CASE WHEN TG_OP = 'UPDATE' AND NEW.update_time = OLD.update_time THEN now() ELSE NEW.update_time END"

PAYMENTS_TRANSITIONS = f"""
CREATE OR REPLACE FUNCTION payments_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.state = 'PENDING' AND NEW.state = 'SUCCEEDED' THEN
    -- A wallet payment's transfer posted and captured by one statement (finish_wallet_transfers): both steps.
    INSERT INTO transitions (resource_type, resource_id, from_state, to_state, reason, time)
    VALUES ('payment', NEW.payment_id, 'PENDING', 'PROCESSING', 'transfer_posted', {_AT}),
           ('payment', NEW.payment_id, 'PROCESSING', 'SUCCEEDED', NEW.state_reason, {_AT});
  ELSIF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
    INSERT INTO transitions (resource_type, resource_id, from_state, to_state, reason, time)
    VALUES ('payment', NEW.payment_id, CASE WHEN TG_OP = 'INSERT' THEN '' ELSE OLD.state END,
            NEW.state, NEW.state_reason, {_AT});
  END IF;
  RETURN NULL;
END $$
"""  # noqa: S608 - DDL built from the constants above, no input

# Migration 0008's version, for the downgrade.
PREVIOUS_PAYMENTS_TRANSITIONS = f"""
CREATE OR REPLACE FUNCTION payments_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
    INSERT INTO transitions (resource_type, resource_id, from_state, to_state, reason, time)
    VALUES ('payment', NEW.payment_id, CASE WHEN TG_OP = 'INSERT' THEN '' ELSE OLD.state END,
            NEW.state, NEW.state_reason, {_AT});
  END IF;
  RETURN NULL;
END $$
"""  # noqa: S608 - DDL built from the constants above, no input

_SIGNATURE = """
  p_owner text,
  p_at timestamptz,
  -- every payment with a definitive answer: posted (PENDING -> PROCESSING -> SUCCEEDED) or refused
  -- (PENDING -> FAILED); its wallet transaction, failure, and the serialized answer its key records
  p_ids uuid[], p_posted boolean[], p_result_refs text[], p_failure_codes text[], p_failure_messages text[],
  p_answers bytea[],
  -- each payment's idempotency key (its primary key: the caller and the key)
  p_key_callers text[], p_keys text[],
  -- their events, in order, each with its aggregate's expected sequence number
  p_event_ids uuid[], p_event_topics text[], p_event_shards smallint[], p_event_aggregates text[],
  p_event_types text[], p_event_payloads bytea[], p_event_headers jsonb[], p_event_sequences bigint[],
  -- payments without a definitive answer: back to the recovery worker after p_retry_after
  p_unknown uuid[], p_retry_after interval
"""

# Everything after the payments' update(s), the same in both versions.
_REST = """
  UPDATE saga_steps s
  SET status = CASE WHEN i.posted THEN 'DONE' ELSE 'FAILED' END, result_ref = i.result_ref,
      detail = i.failure_code, updated_at = p_at
  FROM unnest(p_ids, p_posted, p_result_refs, p_failure_codes) AS i(id, posted, result_ref, failure_code)
  WHERE s.resource_id = i.id AND s.step = 'transfer' AND i.id = ANY(finished);

  UPDATE idempotency_keys k
  SET state = 'DONE', response_code = 0, response_body = i.answer, completed_at = p_at
  FROM unnest(p_ids, p_key_callers, p_keys, p_answers) AS i(id, caller_id, idempotency_key, answer)
  WHERE k.caller_id = i.caller_id AND k.idempotency_key = i.idempotency_key AND k.resource_id = i.id
    AND k.state = CASE WHEN i.id = ANY(finished) THEN 'IN_PROGRESS' END;

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
  WHERE payment_id = ANY(p_unknown) AND lease_owner IS NOT DISTINCT FROM p_owner;

  RETURN finished;
END $$
"""

# Every row by its primary key only: the expected states are an expression over the batch's own columns and
# the lease an IS NOT DISTINCT FROM (p_owner is never NULL), so no partial index (payments_leased,
# payments_unfinished: a dead entry per payment between two vacuums) can serve them (migration 0009).
# A posted payment may be PROCESSING already (its transfer recorded as posted by a saga of the same owner);
# it then moves to SUCCEEDED alone, as before.
FINISH_TRANSFERS = f"""
CREATE OR REPLACE FUNCTION finish_wallet_transfers({_SIGNATURE}) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  finished uuid[];
  sequenced integer;
  expected integer;
BEGIN
  -- One update per payment: posted PENDING -> SUCCEEDED (the trigger records the PROCESSING step between),
  -- refused PENDING -> FAILED.
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
    WHERE p.payment_id = i.id AND p.lease_owner IS NOT DISTINCT FROM p_owner
      AND p.state = ANY(CASE WHEN i.posted THEN ARRAY['PENDING', 'PROCESSING'] ELSE ARRAY['PENDING'] END)
    RETURNING p.payment_id
  )
  SELECT coalesce(array_agg(payment_id), '{{}}') INTO finished FROM moved;
{_REST}"""  # noqa: S608 - DDL built from the constants above, no input

# Migration 0009's body, for the downgrade.
PREVIOUS_FINISH_TRANSFERS = f"""
CREATE OR REPLACE FUNCTION finish_wallet_transfers({_SIGNATURE}) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  finished uuid[];
  sequenced integer;
  expected integer;
BEGIN
  UPDATE payments p
  SET state = 'PROCESSING', state_reason = 'transfer_posted', update_time = p_at
  FROM unnest(p_ids, p_posted) AS i(id, posted)
  WHERE p.payment_id = i.id AND p.state = CASE WHEN i.posted THEN 'PENDING' END
    AND p.lease_owner IS NOT DISTINCT FROM p_owner;

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
    WHERE p.payment_id = i.id AND p.lease_owner IS NOT DISTINCT FROM p_owner
      AND p.state = CASE WHEN i.posted THEN 'PROCESSING' ELSE 'PENDING' END
    RETURNING p.payment_id
  )
  SELECT coalesce(array_agg(payment_id), '{{}}') INTO finished FROM moved;
{_REST}"""  # noqa: S608 - DDL built from the constants above, no input


def upgrade() -> None:
    op.execute(PAYMENTS_TRANSITIONS)
    op.execute(FINISH_TRANSFERS)
    op.execute("CREATE INDEX idempotency_keys_by_resource ON idempotency_keys (resource_id)")
    op.execute("DROP INDEX idempotency_keys_open")
    op.execute("ALTER TABLE idempotency_keys SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE idempotency_keys RESET (fillfactor)")
    op.execute("CREATE INDEX idempotency_keys_open ON idempotency_keys (resource_id) WHERE state = 'IN_PROGRESS'")
    op.execute("DROP INDEX idempotency_keys_by_resource")
    op.execute(PREVIOUS_FINISH_TRANSFERS)
    op.execute(PREVIOUS_PAYMENTS_TRANSITIONS)
