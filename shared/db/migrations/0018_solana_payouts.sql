-- Solana payouts (docs/adr/0019-solana-payouts.md): a signed Solana transfer is valid only until its
-- blockhash expires. The executor records the signature (payouts.tx_hash), the wire bytes (raw_tx)
-- and this height before broadcasting; until the chain passes it, only the same bytes are re-sent.
ALTER TABLE payouts ADD COLUMN last_valid_block_height bigint;
