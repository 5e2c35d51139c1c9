-- pool_snapshot: one consistent read of presence, probe state and listing, for the listing cron
-- and the rollup (so both see the same instant of the state that actually routes customers).
-- KEYS[1]  zset of online devices scored by last presence refresh, ms (presence:online)
-- KEYS[2]  set of listed endpoint ids (pool:listed)
-- ARGV[1]  presence freshness bound, ms: members scored below it are offline
-- returns  array of {endpointId, online (1|0), listed (1|0), presence fields[], probe fields[], endpoint fields[],
--          renting keyId or "" (ep:{id}:reserved)} for every endpoint that is online or listed; field
--          arrays are flat [name, value, ...]
local online = redis.call("ZRANGEBYSCORE", KEYS[1], ARGV[1], "+inf")
local listed = redis.call("SMEMBERS", KEYS[2])
local seen = {}
local ids = {}
for _, id in ipairs(online) do
  if not seen[id] then seen[id] = 1; ids[#ids + 1] = id end
end
local isListed = {}
for _, id in ipairs(listed) do
  isListed[id] = 1
  if not seen[id] then seen[id] = 0; ids[#ids + 1] = id end
end
local out = {}
for _, id in ipairs(ids) do
  local presence = {}
  if seen[id] == 1 then presence = redis.call("HGETALL", "presence:{" .. id .. "}") end
  out[#out + 1] = {
    id,
    (seen[id] == 1 and #presence > 0) and 1 or 0,
    isListed[id] or 0,
    presence,
    redis.call("HGETALL", "probe:{" .. id .. "}"),
    redis.call("HGETALL", "ep:{" .. id .. "}"),
    redis.call("GET", "ep:{" .. id .. "}:reserved") or "",
  }
end
return out
