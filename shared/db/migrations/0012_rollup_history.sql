-- Routable and online counts per pool, one row per minute, appended by the rollup job beside the
-- rollup it replaces: the status page's 24-hour chart. Counts only, like the rollup; 7 days kept.
CREATE TABLE pool_rollup_history (
  minute      timestamptz NOT NULL,           -- the rollup's computed_at, truncated to the minute
  pool        text NOT NULL CHECK (pool IN ('peer', 'mbl')),
  online      integer NOT NULL,
  listed      integer NOT NULL,               -- routable
  countries   integer NOT NULL,               -- countries with at least one routable endpoint
  PRIMARY KEY (minute, pool)
);
