"""A batch of postings decided on what it read, written only if nothing it read has moved.

Revision ID: 0007
Revises: 0006

PostTransactions first tries a batch in two round trips and no explicit
transaction (wallet_svc.batch_operations): one statement reads the batch's
accounts, stored references and outbox sequences without a lock, the items
are decided in Python on what it read, and one call of this function writes
them in a transaction of its own. The function claims the references the
read found free (references before accounts, in reference order, as every
writer claims), locks the accounts in id order and their outbox sequences,
and goes on only if every account is as read (its state, its held amount
and, for a user's wallet, its posted balance; no account appeared or
vanished), every sequence too, and every reference claimed was still free.
Then the decisions are exactly what they would be under the locks, and it
writes them with post_wallet_batch (migration 0006). Otherwise it raises
`serialization_failure` with the constraint name `wallet_batch_moved`,
nothing is stored, and the batch is decided again under locks (migration
0006's four round trips).

A system account (EXTERNAL_SETTLEMENT, FEES) may go negative and is never
frozen, so no decision depends on its balance, and it is the one account
every card payment, refund and payout touches: its balance is not compared.
Its postings' balances are computed here under its lock instead (the balance
before the batch plus the legs so far, in leg order); the function returns
every leg's balance, in leg order. A user's wallet's legs keep the balances
the batch decided, which post_wallet_batch checks against the ledger's.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WRITE_IF_UNMOVED = """
CREATE FUNCTION post_wallet_batch_if_unmoved(
  p_claim_references text[], p_claim_fingerprints text[], p_claim_transactions uuid[],
  -- every account the batch names, with what the read found (state NULL: no such account; posted NULL:
  -- not compared; sequence NULL: no event yet)
  p_account_ids uuid[], p_account_states text[], p_account_posted bigint[], p_account_held bigint[],
  p_account_sequences bigint[],
  -- post_wallet_batch's arguments (a system account's legs' balances are computed here)
  p_at timestamptz,
  p_release text[],
  p_ref_references text[], p_ref_fingerprints text[], p_ref_transactions uuid[],
  p_tx_ids uuid[], p_tx_references text[], p_tx_payment_ids text[], p_tx_descriptions text[],
  p_leg_ids uuid[], p_leg_seqs bigint[], p_leg_transactions uuid[], p_leg_accounts uuid[], p_leg_currencies text[],
  p_leg_amounts bigint[], p_leg_balances bigint[],
  p_event_ids uuid[], p_event_topics text[], p_event_shards smallint[], p_event_aggregates text[],
  p_event_types text[], p_event_payloads bytea[], p_event_headers jsonb[], p_event_sequences bigint[]
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
  claimed integer;
  moved integer;
  balances bigint[];
BEGIN
  WITH claims AS (
    INSERT INTO ledger_references (reference, operation, fingerprint, transaction_id)
    SELECT reference, 'PostTransaction', fingerprint, transaction_id
    FROM unnest(p_claim_references, p_claim_fingerprints, p_claim_transactions)
      AS c(reference, fingerprint, transaction_id)
    ORDER BY reference
    ON CONFLICT (reference) DO NOTHING
    RETURNING reference
  )
  SELECT count(*) INTO claimed FROM claims;
  IF claimed <> cardinality(p_claim_references) THEN
    RAISE EXCEPTION 'a reference of the batch was claimed since it was read'
      USING ERRCODE = 'serialization_failure', CONSTRAINT = 'wallet_batch_moved';
  END IF;

  SELECT count(*) INTO moved
  FROM unnest(p_account_ids, p_account_states, p_account_posted, p_account_held)
    AS e(id, state, posted, held)
  LEFT JOIN (SELECT id, state, posted, held FROM accounts WHERE id = ANY(p_account_ids)
             ORDER BY id FOR NO KEY UPDATE) a USING (id)
  WHERE (a.id IS NULL) <> (e.state IS NULL)
     OR a.state <> e.state OR a.held <> e.held OR a.posted <> coalesce(e.posted, a.posted);
  IF moved > 0 THEN
    RAISE EXCEPTION '% accounts of the batch moved since they were read', moved
      USING ERRCODE = 'serialization_failure', CONSTRAINT = 'wallet_batch_moved';
  END IF;

  SELECT count(*) INTO moved
  FROM unnest(p_account_ids::text[], p_account_sequences) AS e(aggregate_id, last_sequence)
  LEFT JOIN (SELECT aggregate_id, last_sequence FROM outbox_sequence WHERE aggregate_id = ANY(p_account_ids::text[])
             ORDER BY aggregate_id FOR UPDATE) s USING (aggregate_id)
  WHERE s.last_sequence IS DISTINCT FROM e.last_sequence;
  IF moved > 0 THEN
    RAISE EXCEPTION '% outbox sequences of the batch moved since they were read', moved
      USING ERRCODE = 'serialization_failure', CONSTRAINT = 'wallet_batch_moved';
  END IF;

  -- A user's wallet is as read: its legs' balances are the decided ones (post_wallet_batch checks them).
  SELECT coalesce(array_agg(balance ORDER BY n), '{}') INTO balances
  FROM (
    SELECT l.n, CASE WHEN a.system_account IS NULL THEN l.decided
                     ELSE a.posted + sum(l.amount) OVER (PARTITION BY l.account_id ORDER BY l.n) END AS balance
    FROM unnest(p_leg_accounts, p_leg_amounts, p_leg_balances) WITH ORDINALITY AS l(account_id, amount, decided, n)
    JOIN accounts a ON a.id = l.account_id
  ) legs;

  PERFORM post_wallet_batch(
    p_at, p_release, p_ref_references, p_ref_fingerprints, p_ref_transactions,
    p_tx_ids, p_tx_references, p_tx_payment_ids, p_tx_descriptions,
    p_leg_ids, p_leg_seqs, p_leg_transactions, p_leg_accounts, p_leg_currencies, p_leg_amounts, balances,
    p_event_ids, p_event_topics, p_event_shards, p_event_aggregates, p_event_types, p_event_payloads,
    p_event_headers, p_event_sequences);
  RETURN balances;
END $$
"""


def upgrade() -> None:
    op.execute(WRITE_IF_UNMOVED)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION post_wallet_batch_if_unmoved(text[], text[], uuid[], uuid[], text[], bigint[], bigint[],"
        " bigint[], timestamptz, text[], text[], text[], uuid[], uuid[], text[], text[], text[], uuid[], bigint[],"
        " uuid[], uuid[], text[], bigint[], bigint[], uuid[], text[], smallint[], text[], text[], bytea[], jsonb[],"
        " bigint[])"
    )
