-- Supplier earnings accrual (DESIGN.md "Settlement"): the relays' per-device byte counters
-- (Redis bytes:dev:{id}, cumulative) become micro-USDC at the live rate of the device's IP class.
-- Payouts are not built yet: what is accrued is the pending balance.

-- Per-supplier rate overrides by class, merged over settings.earnings_per_gb (decimal USDC per GB,
-- e.g. {"mobile": "0.80"}); NULL = the settings row alone.
ALTER TABLE accounts ADD COLUMN earnings_per_gb jsonb
  CHECK (earnings_per_gb IS NULL OR jsonb_typeof(earnings_per_gb) = 'object');

-- The settlement watermark: the device's cumulative bytes (both directions) already in the ledger,
-- and the remainder below one micro-USDC (in billionths of a micro-USDC) carried into its next
-- accrual, so rounding each row down never loses money.
ALTER TABLE devices ADD COLUMN settled_bytes bigint NOT NULL DEFAULT 0 CHECK (settled_bytes >= 0);
ALTER TABLE devices ADD COLUMN earnings_carry bigint NOT NULL DEFAULT 0
  CHECK (earnings_carry >= 0 AND earnings_carry < 1000000000);
-- The `since` of the Redis counters the watermark belongs to: counters with another `since` restarted
-- from zero (lost Redis data), so all they hold is new; with the same `since`, a total at or below
-- the watermark is a stale read and earns nothing.
ALTER TABLE devices ADD COLUMN settled_since text NOT NULL DEFAULT '';

-- One row per device per settlement that found new bytes. Append-only, like audit_log.
CREATE TABLE earnings_ledger (
  id                 bigserial PRIMARY KEY,
  account_id         text NOT NULL REFERENCES accounts (id),
  device_id          text NOT NULL REFERENCES devices (id),
  ip_type            text NOT NULL CHECK (ip_type IN ('mobile', 'residential', 'datacenter')),
  bytes              bigint NOT NULL CHECK (bytes > 0),          -- served since the previous row
  rate_micro_per_gb  bigint NOT NULL CHECK (rate_micro_per_gb >= 0), -- the rate these bytes earned
  amount_micro       bigint NOT NULL CHECK (amount_micro >= 0),
  settled_through    bigint NOT NULL,                            -- devices.settled_bytes after this row
  created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX earnings_ledger_account ON earnings_ledger (account_id, created_at);
CREATE INDEX earnings_ledger_device ON earnings_ledger (device_id, created_at);

CREATE FUNCTION earnings_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'earnings_ledger is append-only';
END $$;
CREATE TRIGGER earnings_ledger_no_update BEFORE UPDATE OR DELETE ON earnings_ledger
  FOR EACH ROW EXECUTE FUNCTION earnings_ledger_append_only();
CREATE TRIGGER earnings_ledger_no_truncate BEFORE TRUNCATE ON earnings_ledger
  FOR EACH STATEMENT EXECUTE FUNCTION earnings_ledger_append_only();
