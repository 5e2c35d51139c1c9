-- x402 EIP-3009 settlement, once (docs/adr/0008-x402-paid-flow-and-replay.md). An authorization is
-- public as soon as our gas wallet broadcasts it (its calldata is the whole header), so it is claimed
-- durably before anything is sent: the first request to insert the claim owns it; every other copy
-- of the header is refused, whatever isolate it reaches and whatever it orders.

CREATE TABLE x402_authorization_claims (
  authorization_key text PRIMARY KEY,               -- base:eip3009:<from>:<nonce>; UNIQUE protects money
  payer             text NOT NULL,                  -- the authorization's `from`
  product_key       text NOT NULL,                  -- what the owner ordered; the claim buys nothing else
  resource          text NOT NULL,
  price_micro       bigint NOT NULL CHECK (price_micro > 0),
  -- SHA-256 of the x402s_ token the owner holds (minted purchases get it as their session token;
  -- topups use the session's own). Only its holder may resume a pending settlement.
  token_hash        text NOT NULL,
  -- claimed: nothing signed yet; broadcast: tx signed and recorded (then sent); settled: verified on-chain.
  state             text NOT NULL CHECK (state IN ('claimed', 'broadcast', 'settled')),
  gas_wallet        text,
  tx_nonce          bigint CHECK (tx_nonce >= 0),
  tx_hash           text UNIQUE,
  raw_tx            text,                           -- the signed tx, so a retry re-sends it, never re-signs
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CHECK (state = 'claimed' OR tx_hash IS NOT NULL)
);

-- One row per gas wallet: its row lock serializes nonce assignment and broadcast across isolates.
CREATE TABLE x402_gas_wallets (
  address     text PRIMARY KEY,                     -- lowercase 0x address
  next_nonce  bigint NOT NULL CHECK (next_nonce >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
