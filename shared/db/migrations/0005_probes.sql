-- Probe history: one row per probe v2 run (prober/README.md documents the failure codes). Live
-- admission state stays in Redis (probe:{endpointId}); this table is the audit trail behind it.

CREATE TABLE probe_results (
  id               bigserial PRIMARY KEY,
  endpoint_id      text NOT NULL,               -- deviceId for peers, modem id for modems
  probe_mode       text NOT NULL,               -- connect_v2
  trigger          text NOT NULL CHECK (trigger IN ('scheduled', 'breaker')),
  ok               boolean NOT NULL,
  failure_reason   text,                        -- a stable code, NULL when ok
  tls_handshake_ms integer,
  throughput_kbps  integer,                     -- NULL when the transfer was too small to mean something
  speed_tier       text NOT NULL CHECK (speed_tier IN ('fast', 'medium', 'slow', 'unknown')),
  bytes            bigint NOT NULL,
  duration_ms      integer NOT NULL,
  verified_after   boolean NOT NULL,            -- the admission gate after this result
  paused_after     boolean NOT NULL,
  probed_at        timestamptz NOT NULL DEFAULT now(),
  CHECK (ok = (failure_reason IS NULL))
);
CREATE INDEX probe_results_endpoint ON probe_results (endpoint_id, probed_at DESC);
CREATE INDEX probe_results_failures ON probe_results (failure_reason, probed_at DESC) WHERE NOT ok;
