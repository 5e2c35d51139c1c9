-- cred_events_drain: takes up to N keyIds the gateway pushed when it suspended a key at its cap.
-- KEYS[1]  events:cred_suspended
-- ARGV[1]  the most keyIds to take
-- returns  array of keyIds (empty when the list is empty)
local taken = redis.call("LPOP", KEYS[1], tonumber(ARGV[1]))
if not taken then
  return {}
end
return taken
