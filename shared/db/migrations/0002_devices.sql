-- Supply: devices registered through the peer SDKs, their refresh tokens, and relay regions.

CREATE TABLE devices (
  id                text PRIMARY KEY,          -- agent_ + 16 hex of SHA-256(apiKey:name)
  account_id        text NOT NULL REFERENCES accounts (id),
  name              text NOT NULL,
  type              text NOT NULL DEFAULT 'custom',
  connection_method text,
  sdk_version       text,
  wallet_address    text,
  country_hint      text,                      -- what the device claimed (ISO-2); routing uses presence
  carrier           text,
  ip_type           text NOT NULL CHECK (ip_type IN ('mobile', 'residential', 'datacenter')),
  revocation_gen    integer NOT NULL DEFAULT 1,
  proven_at         timestamptz,               -- first byte served (ends the unproven state)
  verified_at       timestamptz,               -- passed probe admission
  listed_for_sale   boolean NOT NULL DEFAULT false,
  created_at        timestamptz NOT NULL DEFAULT now(),
  last_registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_account ON devices (account_id);
CREATE INDEX devices_unproven ON devices (account_id) WHERE proven_at IS NULL AND verified_at IS NULL;

CREATE TABLE refresh_tokens (
  token_hash  text PRIMARY KEY,                -- SHA-256 of the opaque token; the token is never stored
  device_id   text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz,                     -- set when rotated away
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (device_id);

-- Per-account overrides of the device limits (NULL = the global setting `device_limits`).
ALTER TABLE accounts ADD COLUMN max_devices integer CHECK (max_devices >= 0);
ALTER TABLE accounts ADD COLUMN max_unproven_devices integer CHECK (max_unproven_devices >= 0);

-- Rates and routing are data, not code. Operators change these rows; nothing hardcodes them.
INSERT INTO settings (key, value) VALUES
  ('earnings_per_gb', '{"mobile": "0.50", "residential": "0.30", "datacenter": "0.10"}'),
  ('device_limits', '{"maxDevices": 200000, "maxUnproven": 20000}'),
  ('relay_regions', '{"default": "us", "regions": {"us": {"relayUrl": "wss://relay-us.peerproxy.dev", "countries": ["US", "CA", "MX"]}, "eu": {"relayUrl": "wss://relay-eu.peerproxy.dev", "countries": ["DE", "FR", "GB", "NL", "ES", "IT", "PL"]}}}')
ON CONFLICT (key) DO NOTHING;
