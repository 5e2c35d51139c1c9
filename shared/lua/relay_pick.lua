-- relay_pick: the first relay, in the caller's preference order, whose alive entry has not run out.
-- KEYS[1]  zset of relay public URLs scored by alive-until (ms) (relays:alive, relay_alive.lua)
-- ARGV[1]  now in ms
-- ARGV[2..] candidate relay URLs, normalised (shared/relay-url.ts), most preferred first
-- returns  the 1-based index into the candidates of the first live one, 0 if none is alive, or
--          -1 if no relay ever reported (empty zset: a fresh deploy, or no relays in a test)
if redis.call("ZCARD", KEYS[1]) == 0 then
  return -1
end
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local until_ms = redis.call("ZSCORE", KEYS[1], ARGV[i])
  if until_ms and tonumber(until_ms) > now then
    return i - 1
  end
end
return 0
