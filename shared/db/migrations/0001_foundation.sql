-- Foundation: accounts and their hashed API keys, settings (rates are data), the append-only
-- audit log, and the cron's job run record.

CREATE TABLE accounts (
  id          text PRIMARY KEY,               -- acct_...
  name        text NOT NULL,
  kind        text NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'supplier', 'house', 'operator')),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id          text PRIMARY KEY,               -- key_...
  account_id  text NOT NULL REFERENCES accounts (id),
  key_hash    text NOT NULL UNIQUE,           -- SHA-256 of the psx_ secret; the secret is never stored
  hint        text NOT NULL,                  -- first chars, for humans telling keys apart
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE settings (
  key         text PRIMARY KEY,
  value       jsonb NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  actor       text NOT NULL,                  -- account id, 'cron:<job>', 'gateway', ...
  action      text NOT NULL,
  subject     text,
  detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_subject ON audit_log (subject, at);

-- The audit log is append-only by construction, not by convention.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE job_runs (
  id          bigserial PRIMARY KEY,
  job         text NOT NULL,
  started_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  status      text NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
  detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_runs_job ON job_runs (job, started_at DESC);

-- One row: when the every-minute cron last ran (the heartbeat job), for "is the cron alive?".
CREATE TABLE cron_heartbeat (
  id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  beat_at     timestamptz NOT NULL,
  beats       bigint NOT NULL DEFAULT 1
);
