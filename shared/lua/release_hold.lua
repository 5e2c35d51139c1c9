-- release_hold: renews or releases a tunnel's hold on an endpoint (see select_endpoint.lua).
-- Key names built here mirror shared/keys.ts (ep:{id}, ep:{id}:cust, ep:{id}:reserved, pool:idx:...).
-- KEYS[1]  pool:holds zset (member "holdId|endpointId|keyId", score = lease expiry ms)
-- KEYS[2]  conns:cred:{keyId} zset of the credential's live holds
-- ARGV[1]  "renew" | "release"   ARGV[2] hold member   ARGV[3] holdId   ARGV[4] now (ms)
-- ARGV[5]  lease ms (renew)
-- returns  1 if the hold was live (renewed or released), 0 if it had already expired or was released,
--          or (renew) if its endpoint is now reserved for another credential: the hold is released
--          then, so the gateway closes that tunnel (a dedicated modem serves its renter only)
local mode, member, holdId, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

--@include lib/pool_index.lua

--@include lib/release_counts.lua

local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, 64)
for _, m in ipairs(expired) do
  redis.call("ZREM", KEYS[1], m)
  local _, _, _, id, who = string.find(m, "^([^|]*)|([^|]*)|(.*)$")
  if id then releaseCounts(id, who) end
end

if redis.call("ZSCORE", KEYS[1], member) == false then
  redis.call("ZREM", KEYS[2], holdId)
  return 0
end
if mode == "renew" then
  local _, _, _, id, who = string.find(member, "^([^|]*)|([^|]*)|(.*)$")
  local renter = id and redis.call("GET", epKey(id) .. ":reserved")
  if renter and renter ~= who then
    redis.call("ZREM", KEYS[1], member)
    redis.call("ZREM", KEYS[2], holdId)
    releaseCounts(id, who)
    return 0
  end
  local until_ = now + tonumber(ARGV[5])
  redis.call("ZADD", KEYS[1], until_, member)
  redis.call("ZADD", KEYS[2], until_, holdId)
  return 1
end
redis.call("ZREM", KEYS[1], member)
redis.call("ZREM", KEYS[2], holdId)
local _, _, _, id, who = string.find(member, "^([^|]*)|([^|]*)|(.*)$")
if id then releaseCounts(id, who) end
return 1
