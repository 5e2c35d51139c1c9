-- cred_write: mirrors one credential's Postgres state into the gateway's cache in one step.
-- KEYS[1]  cred:{keyId}
-- KEYS[2]  credused:{keyId}
-- KEYS[3]  credsecret:{sha256 of the current secret}
-- KEYS[4..] credsecret:{sha256} of retired secrets: each deleted if it still names this key
-- ARGV[1]  keyId
-- ARGV[2]  accountLabel            ARGV[3]  accountId
-- ARGV[4]  enabled per Postgres (1|0)  ARGV[5]  suspendedReason per Postgres ("" = none)
-- ARGV[6]  capBytes                ARGV[7]  expiresAt (ms epoch, 0 = none)
-- ARGV[8]  tier (mbl|peer|any)     ARGV[9]  maxConnections
-- ARGV[10] endpointId: the one endpoint a dedicated key routes to ("" = ordinary pool routing: no field)
-- returns  {enabled, suspendedReason, usedBytes} as the gateway now sees them (strings)
--
-- A key already at its cap stays suspended whatever Postgres says: the cron may not have recorded
-- the gateway's suspension yet, and only raising the cap (topup) may re-open such a key.
local usedRaw = redis.call("GET", KEYS[2]) or "0"
local enabled = ARGV[4]
local reason = ARGV[5]
if enabled == "1" and (tonumber(usedRaw) or 0) >= tonumber(ARGV[6]) then
  enabled = "0"
  reason = "cap"
end
if enabled == "1" then
  reason = ""
end
redis.call("HSET", KEYS[1],
  "accountLabel", ARGV[2], "accountId", ARGV[3], "enabled", enabled, "capBytes", ARGV[6],
  "expiresAt", ARGV[7], "tier", ARGV[8], "maxConnections", ARGV[9], "suspendedReason", reason)
-- Only dedicated keys carry the field: ordinary keys' entries stay exactly as they were.
if (ARGV[10] or "") ~= "" then
  redis.call("HSET", KEYS[1], "endpointId", ARGV[10])
else
  redis.call("HDEL", KEYS[1], "endpointId")
end
redis.call("SET", KEYS[3], ARGV[1])
for i = 4, #KEYS do
  if KEYS[i] ~= KEYS[3] and redis.call("GET", KEYS[i]) == ARGV[1] then
    redis.call("DEL", KEYS[i])
  end
end
return {enabled, reason, usedRaw}
