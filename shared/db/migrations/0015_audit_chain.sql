-- The audit log becomes hash-chained (docs/adr/0016-hash-chained-audit-log.md): each row carries
-- hash = sha256(prev_hash || canonical row), in the order chain_seq gives, assigned under one lock
-- at commit. `npm run audit:verify` (scripts/audit-verify.ts) recomputes the chain.

ALTER TABLE audit_log ADD COLUMN chain_seq bigint;
ALTER TABLE audit_log ADD COLUMN prev_hash text;
ALTER TABLE audit_log ADD COLUMN hash text;

-- The bytes a row's hash covers: every column but the hashes, as one JSON array (jsonb text output
-- is deterministic: keys sorted, one spelling per number).
CREATE FUNCTION audit_canonical(seq bigint, id bigint, at timestamptz, actor text, action text,
                                subject text, detail jsonb) RETURNS text
  LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_array(seq, id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                           actor, action, subject, detail)::text
$$;

CREATE FUNCTION audit_chain_hash(prev text, canonical text) RETURNS text
  LANGUAGE sql IMMUTABLE AS $$
  SELECT encode(sha256(decode(prev, 'hex') || convert_to(canonical, 'UTF8')), 'hex')
$$;

-- Chaining happens at COMMIT (a deferred constraint trigger), under a transaction-scoped lock held
-- only through the commit: the writer has taken every row lock it needs by then, so the lock cannot
-- deadlock with them, and "the last row" is well defined. Chain order is therefore commit order
-- (chain_seq), not id order: ids come from a sequence, long before the commit.
CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  tail record;
  seq bigint;
  prev text;
BEGIN
  PERFORM pg_advisory_xact_lock(727403);
  SELECT chain_seq, hash INTO tail FROM audit_log WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1;
  seq := coalesce(tail.chain_seq, 0) + 1;
  prev := coalesce(tail.hash, repeat('0', 64));
  PERFORM set_config('peerproxy.audit_chaining', 'on', true);
  UPDATE audit_log
     SET chain_seq = seq, prev_hash = prev,
         hash = audit_chain_hash(prev, audit_canonical(seq, id, at, actor, action, subject, detail))
   WHERE id = NEW.id;
  PERFORM set_config('peerproxy.audit_chaining', 'off', true);
  RETURN NULL;
END $$;

-- Append-only still, except for that one step: filling the chain columns of a row not yet chained,
-- and nothing else.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND current_setting('peerproxy.audit_chaining', true) = 'on'
     AND OLD.hash IS NULL AND NEW.id = OLD.id AND NEW.at = OLD.at AND NEW.actor = OLD.actor
     AND NEW.action = OLD.action AND NEW.subject IS NOT DISTINCT FROM OLD.subject AND NEW.detail = OLD.detail THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_log is append-only';
END $$;

-- Chain the rows that exist, in id order (the append-only trigger is lifted for this one update).
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
DO $$
DECLARE
  r record;
  seq bigint := 0;
  prev text := repeat('0', 64);
  h text;
BEGIN
  FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
    seq := seq + 1;
    h := audit_chain_hash(prev, audit_canonical(seq, r.id, r.at, r.actor, r.action, r.subject, r.detail));
    UPDATE audit_log SET chain_seq = seq, prev_hash = prev, hash = h WHERE id = r.id;
    prev := h;
  END LOOP;
END $$;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;

CREATE UNIQUE INDEX audit_log_chain_seq ON audit_log (chain_seq);

CREATE CONSTRAINT TRIGGER audit_log_chain AFTER INSERT ON audit_log
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
