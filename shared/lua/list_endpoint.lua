-- list_endpoint: puts endpoints up for sale (or takes them off sale) in the selection indexes, each
-- exactly as if alone, a batch per call: the listing cron sends hundreds, one endpoint is a batch of one.
-- Key names built here mirror shared/keys.ts (ep:{id}, pool:idx:<pool>:<country>:<iptype>).
-- KEYS[1]    pool:listed set (every listed endpoint id; stock counts and the bench's scan baseline)
-- KEYS[1+i]  endpoint hash ep:{id} of the i-th endpoint
-- ARGV       per endpoint, in KEYS order: id, "list" | "delist", n, then n strings: the field, value
--            pairs to store when listing (pool, country, ipType, carrier, city, speedTier, kind,
--            relayInternal, deviceId, host, port, maxConns, maxCusts); n is 0 for "delist"
-- returns    per endpoint, 1 when it is listed after the call, 0 otherwise

--@include lib/pool_index.lua

local function setListing(ep, id, mode, a, n)
  -- Leave the old index entries first: a relisted endpoint may have changed country or iptype.
  if redis.call("EXISTS", ep) == 1 then
    redis.call("HSET", ep, "listed", "0")
    reindex(id)
  end
  if mode == "delist" then
    redis.call("SREM", KEYS[1], id)
    if tonumber(redis.call("HGET", ep, "conns") or "0") == 0 then
      redis.call("DEL", ep, ep .. ":cust")
    end
    return 0
  end
  redis.call("HSET", ep, unpack(ARGV, a, a + n - 1))
  redis.call("HSETNX", ep, "conns", 0)
  redis.call("HSETNX", ep, "custs", 0)
  redis.call("HSET", ep, "listed", "1")
  redis.call("SADD", KEYS[1], id)
  reindex(id)
  return 1
end

local listed, a = {}, 1
for i = 2, #KEYS do
  local n = tonumber(ARGV[a + 2])
  listed[#listed + 1] = setListing(KEYS[i], ARGV[a], ARGV[a + 1], a + 3, n)
  a = a + 3 + n
end
return listed
