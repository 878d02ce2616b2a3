"""A batch of postings written in one call.

Revision ID: 0006
Revises: 0005

PostTransactions (wallet_svc.batch_operations) opens its transaction with one
statement that claims the batch's references, locks its accounts and reserves
posting numbers, decides every item in Python on those rows, and writes what
it decided with this function: the references it gives back or writes again,
the transaction headers, the postings (each checked against the balance the
decision assumed: the postings_apply trigger computes it again), and the
wallet.posted events with their sequence numbers (checked against the
outbox's: an event written under these accounts' locks by anyone else would
make the batch raise and store nothing). Whatever the batch size, a batch is
four round trips: BEGIN, open, write, COMMIT.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WRITE_BATCH = """
CREATE FUNCTION post_wallet_batch(
  p_at timestamptz,
  p_release text[],
  p_ref_references text[], p_ref_fingerprints text[], p_ref_transactions uuid[],
  p_tx_ids uuid[], p_tx_references text[], p_tx_payment_ids text[], p_tx_descriptions text[],
  p_leg_ids uuid[], p_leg_seqs bigint[], p_leg_transactions uuid[], p_leg_accounts uuid[], p_leg_currencies text[],
  p_leg_amounts bigint[], p_leg_balances bigint[],
  p_event_ids uuid[], p_event_topics text[], p_event_shards smallint[], p_event_aggregates text[],
  p_event_types text[], p_event_payloads bytea[], p_event_headers jsonb[], p_event_sequences bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  diverged integer;
  sequenced integer;
  expected integer;
BEGIN
  -- References this transaction claimed and does not post under (migration 0005 lets it take them back).
  DELETE FROM ledger_references WHERE reference = ANY(p_release);

  INSERT INTO ledger_references (reference, operation, fingerprint, transaction_id)
  SELECT reference, 'PostTransaction', fingerprint, transaction_id
  FROM unnest(p_ref_references, p_ref_fingerprints, p_ref_transactions) AS r(reference, fingerprint, transaction_id);

  INSERT INTO ledger_transactions (id, reference, payment_id, description, created_at)
  SELECT id, reference, payment_id, description, p_at
  FROM unnest(p_tx_ids, p_tx_references, p_tx_payment_ids, p_tx_descriptions)
    AS t(id, reference, payment_id, description);

  -- In array order (item by item, each in account id order): postings_apply adds each leg to its
  -- account's balance in that order and records balance_after, which must be what the batch decided on.
  WITH inserted AS (
    INSERT INTO postings (id, seq, transaction_id, account_id, currency, amount, created_at)
    SELECT id, seq, transaction_id, account_id, currency, amount, p_at
    FROM unnest(p_leg_ids, p_leg_seqs, p_leg_transactions, p_leg_accounts, p_leg_currencies, p_leg_amounts)
      WITH ORDINALITY AS leg(id, seq, transaction_id, account_id, currency, amount, n)
    ORDER BY n
    RETURNING id, balance_after
  )
  SELECT count(*) INTO diverged
  FROM inserted i JOIN unnest(p_leg_ids, p_leg_balances) AS e(id, balance_after) USING (id)
  WHERE i.balance_after <> e.balance_after;
  IF diverged > 0 THEN
    RAISE EXCEPTION 'the ledger computed another balance than the batch decided on (% postings)', diverged
      USING ERRCODE = 'check_violation', CONSTRAINT = 'postings_batch_balance';
  END IF;

  WITH counts AS (
    SELECT aggregate, count(*) AS n, max(sequence) AS last
    FROM unnest(p_event_aggregates, p_event_sequences) AS e(aggregate, sequence)
    GROUP BY aggregate
  ), bumped AS (
    INSERT INTO outbox_sequence AS o (aggregate_id, last_sequence)
    SELECT aggregate, last FROM counts WHERE last = n
    ON CONFLICT (aggregate_id) DO NOTHING
    RETURNING aggregate_id
  ), moved AS (
    UPDATE outbox_sequence o SET last_sequence = c.last
    FROM counts c
    WHERE o.aggregate_id = c.aggregate AND o.last_sequence = c.last - c.n
    RETURNING o.aggregate_id
  )
  SELECT (SELECT count(*) FROM bumped) + (SELECT count(*) FROM moved), (SELECT count(*) FROM counts)
    INTO sequenced, expected;
  IF sequenced <> expected THEN
    RAISE EXCEPTION 'outbox sequences moved under a batch of postings (% of % as expected)', sequenced, expected;
  END IF;

  INSERT INTO outbox (event_id, topic, shard, aggregate_id, event_type, payload, headers, created_at)
  SELECT id, topic, shard, aggregate, type, payload, headers, p_at
  FROM unnest(p_event_ids, p_event_topics, p_event_shards, p_event_aggregates, p_event_types, p_event_payloads,
              p_event_headers) AS e(id, topic, shard, aggregate, type, payload, headers);
END $$
"""


def upgrade() -> None:
    op.execute(WRITE_BATCH)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION post_wallet_batch(timestamptz, text[], text[], text[], uuid[], uuid[], text[], text[], text[],"
        " uuid[], bigint[], uuid[], uuid[], text[], bigint[], bigint[], uuid[], text[], smallint[], text[], text[],"
        " bytea[], jsonb[], bigint[])"
    )
