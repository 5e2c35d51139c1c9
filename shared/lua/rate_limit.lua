-- rate_limit: fixed-window counter; counts this hit and says whether it is within the limit.
-- KEYS[1]  window counter key (rl:<scope>:<id>:<window>)
-- ARGV[1]  limit (hits allowed per window)
-- ARGV[2]  window length in milliseconds
-- returns  {allowed (1|0), count, ms until the window resets}
local n = redis.call("INCR", KEYS[1])
if n == 1 then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
end
local ttl = redis.call("PTTL", KEYS[1])
if ttl < 0 then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
  ttl = tonumber(ARGV[2])
end
if n > tonumber(ARGV[1]) then
  return {0, n, ttl}
end
return {1, n, ttl}
