-- presence_remove: takes a device offline, but only if this relay still holds it (a device that
-- already reconnected to another relay keeps the presence that relay wrote).
-- KEYS[1]  presence hash of the device (presence:{deviceId})
-- KEYS[2]  zset of online devices (presence:online)
-- ARGV[1]  relayId of the caller
-- ARGV[2]  deviceId
-- returns  integer: 1 if removed, 0 if another relay holds the device (or it was already gone)
local holder = redis.call("HGET", KEYS[1], "relayId")
if holder ~= ARGV[1] then
  return 0
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[2])
return 1
