-- list_endpoint: puts an endpoint up for sale (or takes it off sale) in the selection indexes.
-- Key names built here mirror shared/keys.ts (ep:{id}, pool:idx:<pool>:<country>:<iptype>).
-- KEYS[1]  endpoint hash ep:{id}
-- KEYS[2]  pool:listed set (every listed endpoint id; stock counts and the bench's scan baseline)
-- ARGV[1]  endpoint id   ARGV[2] "list" | "delist"
-- ARGV[3..] field, value pairs to store when listing (pool, country, ipType, carrier, city, speedTier,
--          kind, relayInternal, deviceId, host, port, maxConns, maxCusts)
-- returns  1 when the endpoint is listed after the call, 0 otherwise
local id, mode = ARGV[1], ARGV[2]

--@include lib/pool_index.lua

-- Leave the old index entries first: a relisted endpoint may have changed country or iptype.
if redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("HSET", KEYS[1], "listed", "0")
  reindex(id)
end
if mode == "delist" then
  redis.call("SREM", KEYS[2], id)
  if tonumber(redis.call("HGET", KEYS[1], "conns") or "0") == 0 then
    redis.call("DEL", KEYS[1], KEYS[1] .. ":cust")
  end
  return 0
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call("HSET", KEYS[1], unpack(fields))
redis.call("HSETNX", KEYS[1], "conns", 0)
redis.call("HSETNX", KEYS[1], "custs", 0)
redis.call("HSET", KEYS[1], "listed", "1")
redis.call("SADD", KEYS[2], id)
reindex(id)
return 1
