-- Ops-agent actions and proposals (issue 10, docs/adr/0018-ops-agent-actions-and-proposals.md).

-- What an ops-agent asks for that only a human may grant (auth changes, deletions over the
-- threshold, relay configuration) waits as a `proposal` approval; its summary is the request
-- ({"action": ..., ...}) and `result` what executing it did, written by the approving transaction.
ALTER TABLE approvals DROP CONSTRAINT approvals_kind_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_kind_check CHECK (kind IN ('payout', 'proposal'));
ALTER TABLE approvals ADD COLUMN result jsonb;

INSERT INTO settings (key, value) VALUES
  -- per ops-agent key per hour; human operators are not capped
  ('ops_agent_caps_per_hour', '{"delist": 30, "relist": 30, "reprobe": 60, "pause": 10, "resume": 10, "delete": 10}'),
  -- an ops-agent deletes at most this many things in one request; more is a proposal
  ('mass_deletion_threshold', '3')
ON CONFLICT (key) DO NOTHING;
