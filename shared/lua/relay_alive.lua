-- relay_alive: a relay says it serves peers at its public URL until a moment, or that it stopped.
-- The API hands devices only relays whose entry has not run out (relay_pick.lua).
-- KEYS[1]  zset of relay public URLs scored by alive-until (ms) (relays:alive)
-- ARGV[1]  the relay's public URL, normalised (shared/relay-url.ts)
-- ARGV[2]  alive-until in ms (now + two refresh intervals), or 0: the relay drains or shuts down
-- ARGV[3]  forget entries whose alive-until is older than this (ms): relays that died long ago
-- returns  integer: 1 if the URL is now listed alive, 0 if it was removed
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
  return 1
end
redis.call("ZREM", KEYS[1], ARGV[1])
return 0
