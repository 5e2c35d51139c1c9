-- lease_bytes: reports a tunnel's consumed bytes and leases it a further byte budget, so that all
-- live tunnels of a credential together can never be granted more than what is left under its cap.
-- Reports are idempotent: each carries the tunnel's flush sequence number, and a report whose
-- number is not above the last one applied (a retry whose first attempt did land) bills nothing.
-- O(1) per call (amortised): the other tunnels' outstanding bytes are kept as one sum beside the
-- hash, and entries past their expiry are found in an expiry zset, not by reading the whole hash
-- (which also holds every tunnel closed in the last six lease lives: a hash scan per call made
-- CONNECT setup O(recent tunnels of the key) on the one Redis thread, see docs/adr/0024).
-- KEYS[1]  cred:{keyId} hash (enabled, capBytes, suspendedReason)
-- KEYS[2]  credused:{keyId} integer bytes used, both directions
-- KEYS[3]  credlease:{keyId} hash tunnelId -> "<outstanding bytes>:<expiry ms>:<last seq>[:c]"
--          (":c" marks a closed tunnel, kept until its expiry so a retried final report is a no-op)
-- KEYS[4]  events:cred_suspended list (keyId pushed when the cap suspends the credential)
-- KEYS[5]  credleasesum:{keyId} integer: sum of the outstanding bytes of the open entries of KEYS[3]
-- KEYS[6]  credleaseexp:{keyId} zset tunnelId -> the expiry ms of its entry in KEYS[3]
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

local function parse(v)
  local _, _, amount, expiry, s, c = string.find(v, "^(%-?%d+):(%d+):?(%d*):?(c?)$")
  return math.max(0, tonumber(amount) or 0), tonumber(expiry) or 0, tonumber(s) or 0, c == "c"
end

-- The sum and the zset describe the hash: without it they are stale, and a hash written before
-- they existed is indexed once.
if redis.call("EXISTS", KEYS[3]) == 0 then
  redis.call("DEL", KEYS[5], KEYS[6])
elseif redis.call("EXISTS", KEYS[5]) == 0 then
  local sum = 0
  local leases = redis.call("HGETALL", KEYS[3])
  for i = 1, #leases, 2 do
    local amount, expiry, _, c = parse(leases[i + 1])
    if not c then sum = sum + amount end
    redis.call("ZADD", KEYS[6], expiry, leases[i])
  end
  redis.call("SET", KEYS[5], sum)
  local pttl = redis.call("PTTL", KEYS[3])
  if pttl > 0 then
    redis.call("PEXPIRE", KEYS[5], pttl)
    redis.call("PEXPIRE", KEYS[6], pttl)
  end
end

-- A gateway that died with a lease outstanding: its unspent budget returns to the pool. Bounded per
-- call; an entry left for the next call only makes this grant smaller, never larger.
local reclaimed = 0
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[6], "-inf", now, "LIMIT", 0, 128)) do
  if id ~= tunnelId then
    local v = redis.call("HGET", KEYS[3], id)
    if v then
      local amount, _, _, c = parse(v)
      if not c then reclaimed = reclaimed + amount end
      redis.call("HDEL", KEYS[3], id)
    end
    redis.call("ZREM", KEYS[6], id)
  end
end

local own, lastSeq, closed = 0, 0, false
local mine = redis.call("HGET", KEYS[3], tunnelId)
if mine then
  local amount, _, s, c = parse(mine)
  own, lastSeq, closed = amount, s, c
end
-- what this tunnel's entry holds of the sum
local ownInSum = closed and 0 or own
local others = math.max(0, tonumber(redis.call("GET", KEYS[5]) or "0") - reclaimed - ownInSum)

-- The sum follows the reclaimed entries and this tunnel's new outstanding bytes (INCRBY keeps the TTL).
local function settleSum(ownNow)
  local delta = ownNow - ownInSum - reclaimed
  if delta ~= 0 then redis.call("INCRBY", KEYS[5], delta) end
end

-- Writes this tunnel's entry; the hash, its sum and its expiry zset live and lapse together.
local function put(amount, expiry, value, open)
  redis.call("HSET", KEYS[3], tunnelId, value)
  redis.call("ZADD", KEYS[6], expiry, tunnelId)
  settleSum(open and amount or 0)
  redis.call("PEXPIRE", KEYS[3], ttl * 6)
  redis.call("PEXPIRE", KEYS[5], ttl * 6)
  redis.call("PEXPIRE", KEYS[6], ttl * 6)
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
  settleSum(ownInSum)
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
  put(0, now + ttl * 6, "0:" .. (now + ttl * 6) .. ":" .. lastSeq .. ":c", false)
  return { 0, used, enabled and 1 or 0, 0 }
end

local grant = want
if cap ~= nil then grant = math.max(0, math.min(want, cap - used - others - own)) end
put(own + grant, now + ttl, (own + grant) .. ":" .. (now + ttl) .. ":" .. lastSeq, true)
return { grant, used, 1, own + grant }
