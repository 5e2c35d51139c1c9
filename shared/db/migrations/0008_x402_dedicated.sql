-- x402 dedicated port (/v1/x402/proxy): an agent rents one production modem for N days. The modem
-- is reserved for one credential (which the gateway routes only to it) and taken out of the shared
-- selection until the reservation ends (docs/adr/0005-x402-dedicated-port.md).

-- A credential pinned to one endpoint: the gateway selects exactly that endpoint for it, never
-- another (NULL = ordinary pool routing by username). Mirrored to cred:{id} as `endpointId`.
ALTER TABLE credentials ADD COLUMN endpoint_id text;

-- Operator-configured URL the API POSTs to when the renter asks for a new IP (the modem re-dials).
-- Never shown to customers: it may carry the operator's token.
ALTER TABLE modem_exits ADD COLUMN rotation_url text CHECK (rotation_url ~ '^https?://\S+$');

ALTER TABLE x402_sessions DROP CONSTRAINT x402_sessions_product_check;
ALTER TABLE x402_sessions ADD CONSTRAINT x402_sessions_product_check CHECK (product IN ('pool', 'proxy'));

CREATE TABLE modem_reservations (
  id             text PRIMARY KEY,                  -- mres_...
  modem_exit_id  text NOT NULL REFERENCES modem_exits (id),
  credential_id  text NOT NULL UNIQUE REFERENCES credentials (id),
  starts_at      timestamptz NOT NULL,
  ends_at        timestamptz NOT NULL CHECK (ends_at > starts_at),
  released_at    timestamptz,                       -- set by the cron once ends_at passed (or by an operator)
  released_reason text,                             -- 'expired', ...
  created_at     timestamptz NOT NULL DEFAULT now()
);
-- One live reservation per modem: two buyers can never hold the same modem, whatever the code does.
CREATE UNIQUE INDEX modem_reservations_active ON modem_reservations (modem_exit_id) WHERE released_at IS NULL;
CREATE INDEX modem_reservations_due ON modem_reservations (ends_at) WHERE released_at IS NULL;

-- Every rotation a renter asked for, with what the modem's webhook answered.
CREATE TABLE modem_rotations (
  id              text PRIMARY KEY,                 -- mrot_...
  reservation_id  text NOT NULL REFERENCES modem_reservations (id),
  modem_exit_id   text NOT NULL REFERENCES modem_exits (id),
  status          text NOT NULL CHECK (status IN ('accepted', 'failed')),
  http_status     integer,                          -- the webhook's answer; NULL when it could not be reached
  requested_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX modem_rotations_reservation ON modem_rotations (reservation_id, requested_at);

-- The price of a dedicated modem is data: integer micro-USDC per day, and the traffic each day
-- includes (metered like every credential: no unlimited plan).
INSERT INTO settings (key, value) VALUES
  ('x402_dedicated_pricing', '{"pricePerDayMicro": "6000000", "includedBytesPerDay": "3000000000", "minDays": 1, "maxDays": 30, "rotationMinIntervalSeconds": 60, "enabled": true}')
ON CONFLICT (key) DO NOTHING;
