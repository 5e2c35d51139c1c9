-- heartbeat: records that a named loop ran and returns how many times it ran in the window.
-- KEYS[1]  counter key for the loop and window (e.g. ops:job_runs:<job>:<minute>)
-- ARGV[1]  window length in seconds (the key expires after it)
-- returns  integer: the run count in this window, including this run
local n = redis.call("INCR", KEYS[1])
if n == 1 then
  redis.call("EXPIRE", KEYS[1], tonumber(ARGV[1]))
end
return n
