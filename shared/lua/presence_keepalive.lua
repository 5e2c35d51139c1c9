-- presence_keepalive: the periodic refresh of a batch of this relay's devices. Each device's presence
-- hash was written in full when something about it changed (presence_refresh.lua, on a socket coming
-- or going and on device_info); between changes a tick only pushes its TTL out and its score in the
-- online zset up, one call per batch of devices instead of one call of 26 arguments per device.
-- A device whose hash is gone (Redis lost its data, or a stalled relay let the TTL lapse) or names
-- another relay (a full write takes it back, as each relay's full writes used to) is left alone
-- here and returned, for the caller to write in full.
-- KEYS[1]  zset of online devices scored by last refresh in ms (presence:online)
-- ARGV[1]  ttl in seconds
-- ARGV[2]  now in ms
-- ARGV[3]  this relay's id (the hash's relayId)
-- ARGV[4]  this relay's internal URL (a listed endpoint's relayInternal)
-- ARGV[5..] device ids
-- returns  array of the given device ids to write in full
local ttl = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local rewrite = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local presence = "presence:{" .. id .. "}"
  if redis.call("HGET", presence, "relayId") == ARGV[3] then
    redis.call("EXPIRE", presence, ttl)
    redis.call("ZADD", KEYS[1], now, id)
    -- As presence_refresh.lua: a listed endpoint points at the relay the device is on.
    local endpoint = "ep:{" .. id .. "}"
    if redis.call("EXISTS", endpoint) == 1 and redis.call("HGET", endpoint, "relayInternal") ~= ARGV[4] then
      redis.call("HSET", endpoint, "relayInternal", ARGV[4])
    end
  else
    rewrite[#rewrite + 1] = id
  end
end
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. (now - ttl * 1000))
return rewrite
