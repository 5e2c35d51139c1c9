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
