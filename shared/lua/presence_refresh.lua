-- presence_refresh: marks a device online on this relay and keeps its presence alive for ttl seconds.
-- Also sweeps members of the online zset that no relay refreshed for a whole ttl (crashed relays),
-- and points the device's listed endpoint at this relay: a device that moved (redirect, failover
-- from a dead relay) is reachable through its new relay at once, not after the next listing cron.
-- KEYS[1]  presence hash of the device (presence:{deviceId})
-- KEYS[2]  zset of online devices scored by last refresh in ms (presence:online)
-- KEYS[3]  endpoint hash of the device (ep:{deviceId}); updated only if it exists
-- ARGV[1]  ttl in seconds
-- ARGV[2]  now in ms
-- ARGV[3]  deviceId
-- ARGV[4]  this relay's internal URL (the endpoint's relayInternal)
-- ARGV[5..] field, value pairs written into the presence hash
-- returns  integer: 1
local ttl = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if #ARGV > 4 then
  redis.call("HSET", KEYS[1], unpack(ARGV, 5))
end
redis.call("EXPIRE", KEYS[1], ttl)
redis.call("ZADD", KEYS[2], now, ARGV[3])
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", "(" .. (now - ttl * 1000))
if redis.call("EXISTS", KEYS[3]) == 1 and redis.call("HGET", KEYS[3], "relayInternal") ~= ARGV[4] then
  redis.call("HSET", KEYS[3], "relayInternal", ARGV[4])
end
return 1
