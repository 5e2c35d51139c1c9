-- lease_bytes: reports a tunnel's consumed bytes and leases it a further byte budget, so that all
-- live tunnels of a credential together can never be granted more than what is left under its cap.
-- KEYS[1]  cred:{keyId} hash (enabled, capBytes, suspendedReason)
-- KEYS[2]  credused:{keyId} integer bytes used, both directions
-- KEYS[3]  credlease:{keyId} hash tunnelId -> "<outstanding bytes>:<expiry ms>"
-- KEYS[4]  events:cred_suspended list (keyId pushed when the cap suspends the credential)
-- ARGV[1]  keyId   ARGV[2] tunnelId   ARGV[3] bytes consumed since the last call
-- ARGV[4]  bytes wanted   ARGV[5] now (ms)   ARGV[6] lease ttl ms   ARGV[7] "close" to end the lease
-- returns  {granted, usedBytes, enabled (1|0)}; granted = min(want, cap - used - outstanding), >= 0.
--          A missing capBytes field means no cap; a missing cred hash means disabled.
local keyId, tunnelId = ARGV[1], ARGV[2]
local consumed, want, now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local used
if consumed > 0 then
  used = tonumber(redis.call("INCRBY", KEYS[2], consumed))
else
  used = tonumber(redis.call("GET", KEYS[2]) or "0")
end

local own, others = 0, 0
local leases = redis.call("HGETALL", KEYS[3])
for i = 1, #leases, 2 do
  local _, _, amount, expiry = string.find(leases[i + 1], "^(%-?%d+):(%d+)$")
  if leases[i] == tunnelId then
    own = math.max(0, (tonumber(amount) or 0) - consumed)
  elseif (tonumber(expiry) or 0) <= now then
    -- a gateway that died with a lease outstanding: its unspent budget returns to the pool
    redis.call("HDEL", KEYS[3], leases[i])
  else
    others = others + math.max(0, tonumber(amount) or 0)
  end
end

local f = redis.call("HMGET", KEYS[1], "enabled", "capBytes")
local enabled = f[1] == "1"
local cap = tonumber(f[2])
if enabled and cap ~= nil and used >= cap then
  redis.call("HSET", KEYS[1], "enabled", "0", "suspendedReason", "cap")
  redis.call("LPUSH", KEYS[4], keyId)
  enabled = false
end
if not enabled or ARGV[7] == "close" then
  redis.call("HDEL", KEYS[3], tunnelId)
  return { 0, used, enabled and 1 or 0 }
end

local grant = want
if cap ~= nil then grant = math.max(0, math.min(want, cap - used - others - own)) end
redis.call("HSET", KEYS[3], tunnelId, (own + grant) .. ":" .. (now + ttl))
redis.call("PEXPIRE", KEYS[3], ttl * 4)
return { grant, used, 1 }
