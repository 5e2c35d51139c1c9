-- Fleet watchdog (prober/watchdog.ts): a synthetic customer that buys through the gateway on a
-- schedule. One row per check; alerts it raises. It writes nothing else (it never restarts or
-- delists anything): these rows are for operators (GET /v1/admin/alerts).

CREATE TABLE watchdog_checks (
  id          bigserial PRIMARY KEY,
  run_at      timestamptz NOT NULL,           -- the same for every row of one run
  pool        text NOT NULL CHECK (pool IN ('peer', 'mbl', 'self')),
  country     text,                           -- ISO-2 lowercase; NULL on the 'self' row (the self-check)
  ok          boolean NOT NULL,
  latency_ms  integer,                        -- CONNECT to last body byte; NULL when it failed
  error       text,                           -- a stable code (prober/README.md "Fleet watchdog"), NULL when ok
  CHECK (ok = (error IS NULL)),
  CHECK ((pool = 'self') = (country IS NULL))
);
CREATE INDEX watchdog_checks_group ON watchdog_checks (pool, country, run_at DESC);
-- The admin view reads the latest check per group among recent runs.
CREATE INDEX watchdog_checks_recent ON watchdog_checks (run_at DESC);

CREATE TABLE alerts (
  id            text PRIMARY KEY,             -- alert_...
  kind          text NOT NULL CHECK (kind IN ('watchdog_self', 'watchdog_fleet')),
  -- watchdog_fleet: '<pool>-<country>' as in the username DSL; watchdog_self: the gateway URL the
  -- watchdog buys through (its vantage point)
  scope         text NOT NULL,
  detail        jsonb NOT NULL DEFAULT '{}',
  opened_at     timestamptz NOT NULL DEFAULT now(),
  last_seen_at  timestamptz NOT NULL DEFAULT now(),
  resolved_at   timestamptz,
  CHECK (resolved_at IS NULL OR resolved_at >= opened_at)
);
-- At most one open alert per scope, whatever the code does (two watchdogs racing included).
CREATE UNIQUE INDEX alerts_open_scope ON alerts (kind, scope) WHERE resolved_at IS NULL;
CREATE INDEX alerts_opened ON alerts (opened_at DESC);
