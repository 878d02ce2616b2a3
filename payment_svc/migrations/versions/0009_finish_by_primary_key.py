"""The closing function of a batch of wallet payments finds every row by its primary key.

Revision ID: 0009
Revises: 0008

Migration 0008's `finish_wallet_transfers` updated each payment `WHERE
payment_id = … AND state = 'PENDING' AND lease_owner = p_owner`, and each
idempotency key `WHERE resource_id = … AND state = 'IN_PROGRESS'`. Partial
indexes fit those conditions: `payments_leased` (the lease is an index
condition), `payments_unfinished` and `idempotency_keys_open` (implied by the
state). Every payment of the money path enters and leaves all three, so
between two vacuums each holds a dead entry per payment since, while its
statistics still say "a few rows": the planner joined the batch to a scan of
the whole index. On a grown local database at one payment in flight the
function read ~75 entries of payments_unfinished and ~5 of payments_leased
per call, and used the payments' primary key for almost none
(docs/performance.md, "The closing function by primary key"); the count grows
with the traffic between vacuums.

This version takes each payment's idempotency key (caller and key, the
table's primary key) and writes the other conditions in forms no index can
take (see the function's comment), so the primary keys are the only way to
the rows. It is a new overload: replicas still running the previous version
call the old one during a rollout; a later migration drops it.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FINISH_TRANSFERS = """
CREATE FUNCTION finish_wallet_transfers(
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
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  finished uuid[];
  sequenced integer;
  expected integer;
BEGIN
  -- Every row by its primary key only. The expected state is a CASE over the batch's own columns and the
  -- lease an IS NOT DISTINCT FROM (p_owner is never NULL): no partial index (payments_leased,
  -- payments_unfinished, idempotency_keys_open: a dead entry per payment between two vacuums) can serve
  -- them, so the planner cannot join the batch to a scan of one.
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
  SELECT coalesce(array_agg(payment_id), '{}') INTO finished FROM moved;

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


def upgrade() -> None:
    op.execute(FINISH_TRANSFERS)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION finish_wallet_transfers(text, timestamptz, uuid[], boolean[], text[], text[], text[], bytea[],"
        " text[], text[], uuid[], text[], smallint[], text[], text[], bytea[], jsonb[], bigint[], uuid[], interval)"
    )
