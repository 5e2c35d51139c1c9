-- Access boundary (issue 16, ADR 0009): account kinds, scoped API keys with rotation, what an
-- account may resell, and which key registered each device (so revoking the key reaches them).

ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
  CHECK (kind IN ('customer', 'supplier', 'reseller', 'farmer', 'operator', 'ops', 'house'));

-- Scopes a key carries; a route checks its own scope, never the account kind alone.
ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{}'
  CHECK (scopes <@ ARRAY['supply', 'resell', 'operate', 'ops-agent']::text[]);
-- Set on the old key by a rotation: it keeps working until then (the grace period), then never.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
-- The key that replaced this one; a key is rotated at most once.
ALTER TABLE api_keys ADD COLUMN rotated_to text REFERENCES api_keys (id);
ALTER TABLE api_keys ADD COLUMN created_by text;   -- account id of the operator (or the rotating key's account)

-- Keys that existed before scopes get the ones their account kind used implicitly.
UPDATE api_keys k SET scopes = CASE a.kind
    WHEN 'supplier' THEN ARRAY['supply']
    WHEN 'customer' THEN ARRAY['resell']
    WHEN 'operator' THEN ARRAY['operate']
    ELSE ARRAY[]::text[] END
  FROM accounts a WHERE a.id = k.account_id;

-- What an account may resell through pool keys: lifetime bytes (every mint and topup counts and
-- nothing is given back) and the connection ceiling of one key. NULL = settings.resell_limits.
ALTER TABLE accounts ADD COLUMN resell_allowance_bytes bigint CHECK (resell_allowance_bytes >= 0);
ALTER TABLE accounts ADD COLUMN resell_max_connections integer CHECK (resell_max_connections >= 1);
ALTER TABLE accounts ADD COLUMN resold_bytes bigint NOT NULL DEFAULT 0 CHECK (resold_bytes >= 0);

INSERT INTO settings (key, value) VALUES
  ('resell_limits', '{"allowanceBytes": 10000000000, "maxConnections": 100}')
ON CONFLICT (key) DO NOTHING;

-- The key a device registered with (deviceId derives from it). NULL for devices registered before
-- this migration: their refresh is checked against the account only.
ALTER TABLE devices ADD COLUMN api_key_id text REFERENCES api_keys (id);
CREATE INDEX devices_api_key ON devices (api_key_id) WHERE api_key_id IS NOT NULL;
