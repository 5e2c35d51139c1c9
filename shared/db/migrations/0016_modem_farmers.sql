-- Modem farmers (issue 10, docs/adr/0017-modem-farmers.md): a modem exit belongs to a farmer
-- account; the bytes it serves accrue at the mobile-class rate (with the farmer's own override,
-- accounts.earnings_per_gb) into the same earnings and double-entry ledgers as devices.

-- The farmer paid for this exit's traffic; NULL = the house's own modem (accrues nothing).
ALTER TABLE modem_exits ADD COLUMN account_id text REFERENCES accounts (id);
CREATE INDEX modem_exits_account ON modem_exits (account_id) WHERE account_id IS NOT NULL;

-- The settlement watermark, exactly as for devices (0009): cumulative bytes already accrued, the
-- sub-micro remainder carried, and the `since` of the Redis counters it belongs to.
ALTER TABLE modem_exits ADD COLUMN settled_bytes bigint NOT NULL DEFAULT 0 CHECK (settled_bytes >= 0);
ALTER TABLE modem_exits ADD COLUMN earnings_carry bigint NOT NULL DEFAULT 0
  CHECK (earnings_carry >= 0 AND earnings_carry < 1000000000);
ALTER TABLE modem_exits ADD COLUMN settled_since text NOT NULL DEFAULT '';

-- An earnings row is a device's or a modem exit's, never both.
ALTER TABLE earnings_ledger ALTER COLUMN device_id DROP NOT NULL;
ALTER TABLE earnings_ledger ADD COLUMN modem_exit_id text REFERENCES modem_exits (id);
ALTER TABLE earnings_ledger ADD CONSTRAINT earnings_ledger_one_source
  CHECK (num_nonnulls(device_id, modem_exit_id) = 1);
CREATE INDEX earnings_ledger_modem ON earnings_ledger (modem_exit_id, created_at) WHERE modem_exit_id IS NOT NULL;
