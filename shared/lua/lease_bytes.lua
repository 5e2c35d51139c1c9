-- lease_bytes: reports a tunnel's consumed bytes and leases it a further byte budget, so that all
-- live tunnels of a credential together can never be granted more than what is left under its cap.
-- Reports are idempotent: each carries the tunnel's flush sequence number, and a report whose
-- number is not above the last one applied (a retry whose first attempt did land) bills nothing.
-- KEYS[1]  cred:{keyId} hash (enabled, capBytes, suspendedReason)
-- KEYS[2]  credused:{keyId} integer bytes used, both directions
-- KEYS[3]  credlease:{keyId} hash tunnelId -> "<outstanding bytes>:<expiry ms>:<last seq>[:c]"
--          (":c" marks a closed tunnel, kept until its expiry so a retried final report is a no-op)
-- KEYS[4]  events:cred_suspended list (keyId pushed when the cap suspends the credential)
-- ARGV[1]  keyId   ARGV[2] tunnelId   ARGV[3] bytes consumed since the last report
-- ARGV[4]  bytes wanted   ARGV[5] now (ms)   ARGV[6] lease ttl ms   ARGV[7] "close" to end the lease
-- ARGV[8]  this report's sequence number (1, 2, ... per tunnel; a retry repeats its number)
-- returns  {granted, usedBytes, enabled (1|0), outstanding}; granted = min(want, cap - used -
--          outstanding of all tunnels), >= 0; outstanding = this tunnel's unspent lease after the
--          call (0 when its lease had lapsed and nothing was granted). A missing capBytes field means
--          no cap; a missing cred hash means disabled.
local keyId, tunnelId = ARGV[1], ARGV[2]
local consumed, want, now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local seq = tonumber(ARGV[8]) or 0

local own, others, lastSeq, closed = 0, 0, 0, false
local leases = redis.call("HGETALL", KEYS[3])
for i = 1, #leases, 2 do
  local _, _, amount, expiry, s, c = string.find(leases[i + 1], "^(%-?%d+):(%d+):?(%d*):?(c?)$")
  if leases[i] == tunnelId then
    own = math.max(0, tonumber(amount) or 0)
    lastSeq = tonumber(s) or 0
    closed = c == "c"
  elseif (tonumber(expiry) or 0) <= now then
    -- a gateway that died with a lease outstanding: its unspent budget returns to the pool
    redis.call("HDEL", KEYS[3], leases[i])
  else
    others = others + math.max(0, tonumber(amount) or 0)
  end
end

local used
if seq > lastSeq and consumed > 0 then
  used = tonumber(redis.call("INCRBY", KEYS[2], consumed))
  own = math.max(0, own - consumed)
else
  used = tonumber(redis.call("GET", KEYS[2]) or "0")
end
if closed or seq <= lastSeq and ARGV[7] == "close" then
  -- already closed (or this close already applied): nothing more to bill or grant
  return { 0, used, redis.call("HGET", KEYS[1], "enabled") == "1" and 1 or 0, 0 }
end
if seq > lastSeq then lastSeq = seq end

local f = redis.call("HMGET", KEYS[1], "enabled", "capBytes")
local enabled = f[1] == "1"
local cap = tonumber(f[2])
if enabled and cap ~= nil and used >= cap then
  redis.call("HSET", KEYS[1], "enabled", "0", "suspendedReason", "cap")
  redis.call("LPUSH", KEYS[4], keyId)
  enabled = false
end
if not enabled or ARGV[7] == "close" then
  redis.call("HSET", KEYS[3], tunnelId, "0:" .. (now + ttl * 6) .. ":" .. lastSeq .. ":c")
  redis.call("PEXPIRE", KEYS[3], ttl * 6)
  return { 0, used, enabled and 1 or 0, 0 }
end

local grant = want
if cap ~= nil then grant = math.max(0, math.min(want, cap - used - others - own)) end
redis.call("HSET", KEYS[3], tunnelId, (own + grant) .. ":" .. (now + ttl) .. ":" .. lastSeq)
redis.call("PEXPIRE", KEYS[3], ttl * 6)
return { grant, used, 1, own + grant }
