-- x402: agents buy pool access with USDC. A payment is consumed exactly once: the consumption key
-- `<network>:<tx>` is the primary key, and the payment row, the credential and the session are
-- written in one transaction, so two requests racing with one hash cannot both mint.

-- The manage handle an agent keeps (`x402s_...`); only its SHA-256 is stored.
CREATE TABLE x402_sessions (
  id              text PRIMARY KEY,                  -- x402ses_...
  token_hash      text NOT NULL UNIQUE,
  -- The credential's pak_ secret, AES-GCM sealed under a key derived from the session token
  -- (never stored), so /connection can re-emit the same password and this table alone reveals nothing.
  sealed_secret   text NOT NULL,
  credential_id   text NOT NULL UNIQUE REFERENCES credentials (id),
  product         text NOT NULL CHECK (product IN ('pool')),
  network         text NOT NULL CHECK (network IN ('base', 'solana')),
  payer           text NOT NULL,                     -- the wallet that paid (binding proofs must come from it)
  username        text NOT NULL,                     -- as bought, with the sid/rot the agent asked for
  expires_at      timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE x402_payments (
  consumption_key   text PRIMARY KEY,                -- <network>:<tx hash | signature>; UNIQUE protects money
  network           text NOT NULL CHECK (network IN ('base', 'solana')),
  tx_ref            text NOT NULL,
  payer             text NOT NULL,
  amount_micro      bigint NOT NULL CHECK (amount_micro >= 0),  -- what the chain says was paid
  price_micro       bigint NOT NULL CHECK (price_micro > 0),    -- what we quoted
  purpose           text NOT NULL CHECK (purpose IN ('purchase', 'topup')),
  -- What the payment bought (`pool:mbl:us:<bytes>:<days>`, `topup:<session>:<bytes>`): the same
  -- tx presented for anything else is refused.
  product_key       text NOT NULL,
  -- EIP-3009 payments: `base:eip3009:<from>:<nonce>`, so a retried authorization finds its mint.
  authorization_key text UNIQUE,
  session_id        text REFERENCES x402_sessions (id),
  credential_id     text REFERENCES credentials (id),
  created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX x402_payments_session ON x402_payments (session_id);
