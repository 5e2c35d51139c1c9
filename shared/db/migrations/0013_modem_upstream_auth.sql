-- A production modem's upstream proxy credentials, sealed (AES-256-GCM, shared/upstream-auth.ts)
-- under MODEM_UPSTREAM_KEY: the database never holds them in the clear. NULL = the modem takes no
-- credentials (network isolation only).
ALTER TABLE modem_exits ADD COLUMN upstream_auth_sealed text CHECK (upstream_auth_sealed ~ '^v1\.[A-Za-z0-9+/=]+\.[A-Za-z0-9+/=]+$');
