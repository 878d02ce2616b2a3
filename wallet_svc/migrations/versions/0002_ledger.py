"""The double-entry ledger: accounts, transactions, postings, holds, references.

Every invariant the ledger promises is enforced here, by PostgreSQL, so that
no bug in the service can persist a broken ledger (docs/wallet.md lists them):

- balances change only through postings and holds (triggers maintain
  `posted` and `held`; a guard rejects any other change of them);
- customer and merchant wallets never go below zero available, holds are
  never negative (CHECK constraints);
- postings are immutable, non-zero, in their account's currency (CHECK,
  composite foreign key, trigger) and every transaction sums to zero per
  currency (a deferred constraint trigger checked at commit);
- a frozen wallet takes no debit and no new hold, a closed one holds nothing;
- a reference, a transaction's reference and a hold's reference are unique;
  a hold leaves OPEN exactly once.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE accounts (
    id uuid PRIMARY KEY,
    owner_id text,
    system_account text,
    currency char(3) NOT NULL,
    state text NOT NULL DEFAULT 'ACTIVE',
    state_reason text NOT NULL DEFAULT '',
    posted bigint NOT NULL DEFAULT 0,
    held bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_id_currency UNIQUE (id, currency),
    CONSTRAINT accounts_owner_or_system CHECK ((owner_id IS NULL) <> (system_account IS NULL)),
    CONSTRAINT accounts_system_account CHECK (system_account IN ('EXTERNAL_SETTLEMENT', 'FEES')),
    CONSTRAINT accounts_currency CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT accounts_state CHECK (state IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    CONSTRAINT accounts_system_active_without_holds
        CHECK (system_account IS NULL OR (state = 'ACTIVE' AND held = 0)),
    CONSTRAINT accounts_held_nonnegative CHECK (held >= 0),
    CONSTRAINT accounts_available_nonnegative CHECK (system_account IS NOT NULL OR posted - held >= 0),
    CONSTRAINT accounts_closed_empty CHECK (state <> 'CLOSED' OR (posted = 0 AND held = 0))
);
CREATE UNIQUE INDEX accounts_one_open_wallet_per_currency
    ON accounts (owner_id, currency) WHERE owner_id IS NOT NULL AND state <> 'CLOSED';
CREATE UNIQUE INDEX accounts_one_system_account_per_currency
    ON accounts (system_account, currency) WHERE system_account IS NOT NULL;
CREATE INDEX accounts_by_owner ON accounts (owner_id, created_at, id) WHERE owner_id IS NOT NULL;

CREATE TABLE ledger_transactions (
    id uuid PRIMARY KEY,
    reference text NOT NULL CONSTRAINT ledger_transactions_reference UNIQUE,
    payment_id text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE postings (
    seq bigserial PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    transaction_id uuid NOT NULL REFERENCES ledger_transactions (id),
    account_id uuid NOT NULL,
    currency char(3) NOT NULL,
    amount bigint NOT NULL CONSTRAINT postings_amount_nonzero CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT postings_account_currency FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency),
    CONSTRAINT postings_one_leg_per_account UNIQUE (transaction_id, account_id)
);
CREATE INDEX postings_by_account ON postings (account_id, seq);

CREATE TABLE holds (
    id uuid PRIMARY KEY,
    wallet_id uuid NOT NULL,
    currency char(3) NOT NULL,
    amount bigint NOT NULL CONSTRAINT holds_amount_positive CHECK (amount > 0),
    captured_amount bigint NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'OPEN',
    reference text NOT NULL CONSTRAINT holds_reference UNIQUE,
    payment_id text NOT NULL DEFAULT '',
    capture_transaction_id uuid REFERENCES ledger_transactions (id) DEFERRABLE INITIALLY DEFERRED,
    expire_time timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT holds_wallet_currency FOREIGN KEY (wallet_id, currency) REFERENCES accounts (id, currency),
    CONSTRAINT holds_state CHECK (state IN ('OPEN', 'CAPTURED', 'RELEASED', 'EXPIRED')),
    CONSTRAINT holds_captured_within_amount CHECK (captured_amount >= 0 AND captured_amount <= amount),
    CONSTRAINT holds_captured_iff_posted CHECK (
        (state = 'CAPTURED') = (captured_amount > 0)
        AND (state = 'CAPTURED') = (capture_transaction_id IS NOT NULL)
    )
);
CREATE INDEX holds_open_by_expiry ON holds (expire_time) WHERE state = 'OPEN';

-- One row per idempotency reference of a mutating internal call: which call,
-- a fingerprint of its arguments, and what it produced. It commits with the
-- effect (the result ids are chosen before the effect exists, hence the
-- deferred foreign keys).
CREATE TABLE ledger_references (
    reference text PRIMARY KEY CONSTRAINT ledger_references_length CHECK (length(reference) BETWEEN 1 AND 255),
    operation text NOT NULL,
    fingerprint text NOT NULL,
    hold_id uuid REFERENCES holds (id) DEFERRABLE INITIALLY DEFERRED,
    transaction_id uuid REFERENCES ledger_transactions (id) DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_references_result CHECK (hold_id IS NOT NULL OR transaction_id IS NOT NULL)
);
"""

# Balances are maintained by the database itself: a posting adds its amount to
# its account (and records the balance after it); a hold adds to `held` while
# OPEN. The account guard rejects every other change to a balance, a debit or
# new hold on a frozen wallet, and changes to an account's identity.
TRIGGERS = """
CREATE FUNCTION ledger_apply_posting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET posted = posted + NEW.amount, updated_at = now()
     WHERE id = NEW.account_id
     RETURNING posted INTO NEW.balance_after;
    RETURN NEW;
END $$;
CREATE TRIGGER postings_apply BEFORE INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_posting();

CREATE FUNCTION ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_immutable';
END $$;
CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
CREATE TRIGGER ledger_transactions_immutable BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
CREATE TRIGGER ledger_references_immutable BEFORE UPDATE OR DELETE ON ledger_references
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();

-- Checked at commit, once every leg is in: per currency the legs sum to zero
-- (with non-zero legs this also means at least two of them).
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM postings WHERE transaction_id = NEW.id)
       OR EXISTS (SELECT 1 FROM postings WHERE transaction_id = NEW.id
                   GROUP BY currency HAVING sum(amount) <> 0) THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero per currency', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transactions_balanced';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_apply_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'OPEN' OR NEW.captured_amount <> 0 THEN
            RAISE EXCEPTION 'a hold starts OPEN' USING ERRCODE = 'check_violation', CONSTRAINT = 'holds_start_open';
        END IF;
        UPDATE accounts SET held = held + NEW.amount, updated_at = now() WHERE id = NEW.wallet_id;
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.wallet_id, NEW.currency, NEW.amount, NEW.reference, NEW.payment_id, NEW.expire_time,
        NEW.created_at) IS DISTINCT FROM
       (OLD.id, OLD.wallet_id, OLD.currency, OLD.amount, OLD.reference, OLD.payment_id, OLD.expire_time,
        OLD.created_at)
       OR (OLD.state <> 'OPEN' AND ROW(NEW.state, NEW.captured_amount, NEW.capture_transaction_id)
                                   IS DISTINCT FROM ROW(OLD.state, OLD.captured_amount, OLD.capture_transaction_id))
    THEN
        RAISE EXCEPTION 'hold % is final or its terms changed', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holds_final';
    END IF;
    IF OLD.state = 'OPEN' AND NEW.state <> 'OPEN' THEN
        UPDATE accounts SET held = held - OLD.amount, updated_at = now() WHERE id = OLD.wallet_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER holds_apply BEFORE INSERT OR UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_hold();
CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();

CREATE FUNCTION ledger_guard_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Depth 1 is a direct UPDATE; the posting and hold triggers run at depth 2.
    IF (NEW.posted, NEW.held) IS DISTINCT FROM (OLD.posted, OLD.held) AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'balances change only through postings and holds'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_balance_via_ledger';
    END IF;
    IF (NEW.id, NEW.owner_id, NEW.system_account, NEW.currency, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.owner_id, OLD.system_account, OLD.currency, OLD.created_at) THEN
        RAISE EXCEPTION 'an account''s identity is immutable'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_identity_immutable';
    END IF;
    IF OLD.state = 'FROZEN' AND (NEW.posted < OLD.posted OR NEW.held > OLD.held) THEN
        RAISE EXCEPTION 'wallet % is frozen', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_frozen_no_debit_or_hold';
    END IF;
    IF OLD.state = 'CLOSED' AND NEW.state <> 'CLOSED' THEN
        RAISE EXCEPTION 'wallet % is closed', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_closed_final';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_guard BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_guard_account();
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
"""


def statements(sql: str) -> list[str]:
    """Splits a script into single statements (asyncpg prepares each one);
    a `;` inside a $$-quoted function body does not end a statement."""
    found, lines = [], []
    for line in sql.splitlines():
        lines.append(line)
        chunk = "\n".join(lines)
        if line.rstrip().endswith(";") and chunk.count("$$") % 2 == 0:
            found.append(chunk)
            lines = []
    return found


def upgrade() -> None:
    for statement in statements(TABLES) + statements(TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ledger_references, holds, postings, ledger_transactions, accounts CASCADE")
    op.execute(
        "DROP FUNCTION IF EXISTS ledger_apply_posting, ledger_immutable, ledger_check_balanced,"
        " ledger_apply_hold, ledger_guard_account"
    )
