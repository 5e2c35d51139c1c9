-- Issue 10: one double-entry ledger, supplier wallets, withdrawals, the approval queue and on-chain
-- payouts (docs/adr/0013-double-entry-ledger.md, 0014-withdrawals-and-payouts.md).

-- A ledger transaction groups postings that move money together; its postings sum to zero.
CREATE TABLE ledger_txns (
  id          text PRIMARY KEY,                -- ltx_...
  kind        text NOT NULL CHECK (kind IN ('opening', 'accrual', 'withdrawal', 'withdrawal_reversal',
                                            'payout', 'sale')),
  ref         text,                            -- what caused it: a withdrawal id, a payment key, ...
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_txns_ref ON ledger_txns (ref);

-- Positive = debit, negative = credit, integer micro-USDC. A balance is the sum of its postings.
--   supplier_payable     liability: what the house owes a supplier/farmer (credit on accrual)
--   supplier_earnings    expense: what the supplier's traffic cost the house
--   payout_pending       liability: withdrawn balance reserved until the payout lands (or is rejected)
--   treasury             asset: USDC the house holds (debit on sales, credit on payouts)
--   sales_revenue        income: customer payments (x402, reseller top-ups)
CREATE TABLE ledger_postings (
  id            bigserial PRIMARY KEY,
  txn_id        text NOT NULL REFERENCES ledger_txns (id),
  book          text NOT NULL CHECK (book IN ('supplier_payable', 'supplier_earnings', 'payout_pending',
                                              'treasury', 'sales_revenue')),
  account_id    text REFERENCES accounts (id),   -- the supplier/customer the posting belongs to
  amount_micro  bigint NOT NULL CHECK (amount_micro <> 0),
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_postings_txn ON ledger_postings (txn_id);
CREATE INDEX ledger_postings_book ON ledger_postings (book, account_id);

-- Every transaction balances, checked at COMMIT (deferred), so postings may be inserted one by one.
CREATE FUNCTION ledger_txn_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  total numeric;
BEGIN
  SELECT coalesce(sum(amount_micro), 0) INTO total FROM ledger_postings WHERE txn_id = NEW.txn_id;
  IF total <> 0 THEN
    RAISE EXCEPTION 'ledger transaction % does not balance: postings sum to % micro-USDC', NEW.txn_id, total
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_txn_balances();

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER ledger_postings_no_update BEFORE UPDATE OR DELETE ON ledger_postings
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_postings_no_truncate BEFORE TRUNCATE ON ledger_postings
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_txns_no_update BEFORE UPDATE OR DELETE ON ledger_txns
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_txns_no_truncate BEFORE TRUNCATE ON ledger_txns
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Opening balances: what earnings_ledger accrued before the ledger existed, one transaction.
INSERT INTO ledger_txns (id, kind, ref)
  SELECT 'ltx_opening_0031', 'opening', 'earnings_ledger'
   WHERE EXISTS (SELECT 1 FROM earnings_ledger WHERE amount_micro > 0);
INSERT INTO ledger_postings (txn_id, book, account_id, amount_micro)
  SELECT 'ltx_opening_0031', b.book, e.account_id, CASE b.book WHEN 'supplier_earnings' THEN e.total ELSE -e.total END
    FROM (SELECT account_id, sum(amount_micro) AS total FROM earnings_ledger GROUP BY account_id
          HAVING sum(amount_micro) > 0) e
   CROSS JOIN (VALUES ('supplier_earnings'), ('supplier_payable')) AS b (book);

-- The one wallet an account is paid to. A change starts the cooling period: nothing pays to it
-- before payable_from.
CREATE TABLE payout_wallets (
  account_id    text PRIMARY KEY REFERENCES accounts (id),
  network       text NOT NULL CHECK (network IN ('base', 'solana')),
  address       text NOT NULL,
  payable_from  timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE withdrawals (
  id             text PRIMARY KEY,              -- wd_...
  account_id     text NOT NULL REFERENCES accounts (id),
  amount_micro   bigint NOT NULL CHECK (amount_micro > 0),
  network        text NOT NULL CHECK (network IN ('base', 'solana')),
  address        text NOT NULL,                 -- the wallet registered and out of cooling at request time
  minimum_micro  bigint NOT NULL,               -- the minimum that applied (ADR 0015)
  status         text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected', 'paid', 'failed')),
  requested_by   text NOT NULL,                 -- api key id
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX withdrawals_account ON withdrawals (account_id, created_at DESC);

-- What only a human may grant (DESIGN.md "Upkeep"). One decision per approval.
CREATE TABLE approvals (
  id           text PRIMARY KEY,                -- apr_...
  kind         text NOT NULL CHECK (kind IN ('payout')),
  subject      text NOT NULL,                   -- the withdrawal id for payouts
  summary      jsonb NOT NULL DEFAULT '{}'::jsonb,
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
  proposed_by  text NOT NULL,
  decided_by   text,
  reason       text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  decided_at   timestamptz,
  UNIQUE (kind, subject)
);
CREATE INDEX approvals_pending ON approvals (created_at) WHERE status = 'pending';

-- One on-chain payout per withdrawal. The signed transaction and its nonce are committed before
-- the broadcast, so a crash in between is reconciled from this row, never signed twice.
CREATE TABLE payouts (
  withdrawal_id  text PRIMARY KEY REFERENCES withdrawals (id),
  network        text NOT NULL CHECK (network IN ('base', 'solana')),
  to_address     text NOT NULL,
  amount_micro   bigint NOT NULL CHECK (amount_micro > 0),
  status         text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'signed', 'broadcast', 'confirmed', 'failed')),
  from_address   text,
  tx_nonce       bigint,
  tx_hash        text UNIQUE,
  raw_tx         text,
  block_number   bigint,
  confirmations  integer NOT NULL DEFAULT 0,
  last_error     text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (from_address, tx_nonce)
);
CREATE INDEX payouts_open ON payouts (created_at) WHERE status IN ('queued', 'signed', 'broadcast');

-- The treasury's next nonce as we handed it out (the chain's pending count covers anything else).
CREATE TABLE treasury_nonces (
  address     text PRIMARY KEY,
  next_nonce  bigint NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO settings (key, value) VALUES
  ('wallet_cooling_seconds', '604800'),
  ('withdrawal_minimum_micro', '{"agent": 5000000, "sdk": 10000000}')
ON CONFLICT (key) DO NOTHING;
