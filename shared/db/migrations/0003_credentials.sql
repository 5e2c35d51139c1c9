-- Credentials: pool access keys (the reseller pipeline that x402 mints through), their daily usage,
-- and the idempotency record of every keyed write. The gateway never reads these tables: it reads
-- the Redis mirror (docs/internal.md "Credentials cache").

-- The `<account>` part of usernames (psx_<label>-<pool>-<country>); set on first credential.
ALTER TABLE accounts ADD COLUMN username_label text UNIQUE CHECK (username_label ~ '^[a-z0-9_]{1,64}$');

CREATE TABLE credentials (
  id                   text PRIMARY KEY,            -- pk_...
  account_id           text NOT NULL REFERENCES accounts (id),
  name                 text NOT NULL DEFAULT '',
  secret_hash          text NOT NULL UNIQUE,        -- SHA-256 of the pak_ secret; the secret is never stored
  -- Secrets regenerate replaced whose removal from Redis is not yet confirmed: a failed mirror
  -- write must not leave an old secret working, so each sync deletes them all, then clears this.
  retired_secret_hashes text[] NOT NULL DEFAULT '{}',
  secret_hint          text NOT NULL,               -- first chars, for humans telling keys apart
  account_label        text NOT NULL,
  pool                 text NOT NULL CHECK (pool IN ('mbl', 'peer', 'any')),
  country              text NOT NULL CHECK (country ~ '^([a-z]{2}|any)$'),
  tier                 text NOT NULL CHECK (tier IN ('mbl', 'peer', 'any')),
  cap_bytes            bigint NOT NULL CHECK (cap_bytes >= 0),
  enabled              boolean NOT NULL DEFAULT true,
  suspended_reason     text,                        -- 'cap' (gateway), 'disabled' (owner), 'expired' (cron)
  expires_at           timestamptz,
  max_connections      integer NOT NULL CHECK (max_connections BETWEEN 1 AND 10000),
  -- credused:{id} as of the last usage persist; the next persist records only what came after.
  used_bytes_persisted bigint NOT NULL DEFAULT 0,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  deleted_at           timestamptz
);
CREATE INDEX credentials_account ON credentials (account_id, created_at) WHERE deleted_at IS NULL;

CREATE TABLE credential_usage_daily (
  credential_id  text NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
  day            date NOT NULL,                     -- UTC
  bytes          bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
  PRIMARY KEY (credential_id, day)
);

-- Same account + same Idempotency-Key: the first request's response for 24 h, or 409 when the
-- body differs. The response is sealed with a key derived from the caller's API key secret and
-- the Idempotency-Key (neither stored), so a created key's secret is not readable from this table.
CREATE TABLE idempotency_keys (
  account_id     text NOT NULL REFERENCES accounts (id),
  key_hash       text NOT NULL,                     -- SHA-256 of the Idempotency-Key
  request_hash   text NOT NULL,                     -- SHA-256 of method, path and canonical body
  subject        text,                              -- the credential the request changed
  status         integer,
  response       text,                              -- sealed: base64(iv || AES-GCM ciphertext)
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, key_hash)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Production modem exits (pool mbl): upstream HTTP proxies on per-modem ports, registered by an
-- operator through /v1/admin/modem-exits, which lists them in the selection pool. Modems have no
-- presence: only the operator (or failing probes) takes them off sale.
CREATE TABLE modem_exits (
  id          text PRIMARY KEY,                    -- modem_...
  host        text NOT NULL,
  port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  country     text NOT NULL CHECK (country ~ '^[a-z]{2}$'),
  carrier     text,
  city        text,
  ip_type     text NOT NULL DEFAULT 'mobile' CHECK (ip_type IN ('mobile', 'residential', 'datacenter')),
  created_by  text NOT NULL REFERENCES accounts (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);
-- One live registration per address: registering it again updates that one (retry-safe).
CREATE UNIQUE INDEX modem_exits_address ON modem_exits (host, port) WHERE deleted_at IS NULL;
