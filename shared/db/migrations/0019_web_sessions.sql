-- Sign-in sessions of the HTML pages (/farmer, /admin; docs/adr/0020): an API key is exchanged for
-- a random session token that lives only in the browser's cookie; this table keeps its SHA-256.
-- A session is only as good as the key it was made from: every read joins api_keys, so revoking a
-- key, or the end of a rotation's grace period, ends its sessions at once.

CREATE TABLE web_sessions (
  token_hash   text PRIMARY KEY,              -- SHA-256 hex of the cookie's token; the token is never stored
  api_key_id   text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
  account_id   text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  CHECK (expires_at > created_at)
);
CREATE INDEX web_sessions_key ON web_sessions (api_key_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
