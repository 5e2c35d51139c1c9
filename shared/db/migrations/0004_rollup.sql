-- The one materialized rollup every surface reads (stock endpoint, dashboards, ops queries),
-- derived from the live Redis pool state by the every-minute cron. Replaced whole each run.
CREATE TABLE pool_rollup (
  pool          text NOT NULL CHECK (pool IN ('peer', 'mbl')),
  country       text NOT NULL,                -- ISO-2 lowercase
  registered    integer NOT NULL,             -- devices registered with this country (peer pool)
  online        integer NOT NULL,
  verified      integer NOT NULL,
  listed        integer NOT NULL,             -- routable: up for sale right now
  tier_fast     integer NOT NULL,
  tier_medium   integer NOT NULL,
  tier_slow     integer NOT NULL,
  tier_unknown  integer NOT NULL,
  computed_at   timestamptz NOT NULL,
  PRIMARY KEY (pool, country)
);

-- Registered devices per country are counted from Postgres (presence only knows who is online).
CREATE INDEX devices_country ON devices (country_hint);
