-- pool_snapshot: presence, probe state and listing of a batch of endpoints, for the listing cron and
-- the rollup. Each endpoint is read whole in one step; the pool is read in batches (ids from
-- pool_members.lua) because one call over tens of thousands of endpoints held Redis, and every
-- gateway's selection with it, for seconds (1-2 s at 20,000).
-- KEYS[1]  zset of online devices scored by last presence refresh, ms (presence:online)
-- KEYS[2]  set of listed endpoint ids (pool:listed)
-- ARGV[1]  presence freshness bound, ms: members scored below it are offline
-- ARGV[2..] endpoint ids
-- returns  array of {endpointId, online (1|0), listed (1|0), presence fields[], probe fields[], endpoint fields[],
--          renting keyId or "" (ep:{id}:reserved)} for every given endpoint that is still online or
--          listed; field arrays are flat [name, value, ...]
local bound = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local score = redis.call("ZSCORE", KEYS[1], id)
  local fresh = score and tonumber(score) >= bound
  local listed = redis.call("SISMEMBER", KEYS[2], id)
  if fresh or listed == 1 then
    local presence = {}
    if fresh then presence = redis.call("HGETALL", "presence:{" .. id .. "}") end
    out[#out + 1] = {
      id,
      (fresh and #presence > 0) and 1 or 0,
      listed,
      presence,
      redis.call("HGETALL", "probe:{" .. id .. "}"),
      redis.call("HGETALL", "ep:{" .. id .. "}"),
      redis.call("GET", "ep:{" .. id .. "}:reserved") or "",
    }
  end
end
return out
