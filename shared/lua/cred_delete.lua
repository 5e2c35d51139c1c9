-- cred_delete: removes a deleted credential from the gateway's cache so its secret stops at once.
-- KEYS[1]  cred:{keyId}
-- KEYS[2]  credused:{keyId}
-- KEYS[3..] credsecret:{hash} for the current and any retired secret; deleted if they name this key
-- ARGV[1]  keyId
-- ARGV[2]  seconds credused:{keyId} lives on, so the usage cron can still persist its last delta
-- returns  integer: how many credsecret keys were removed
redis.call("DEL", KEYS[1])
if redis.call("EXISTS", KEYS[2]) == 1 then
  redis.call("EXPIRE", KEYS[2], tonumber(ARGV[2]))
end
local removed = 0
for i = 3, #KEYS do
  if redis.call("GET", KEYS[i]) == ARGV[1] then
    redis.call("DEL", KEYS[i])
    removed = removed + 1
  end
end
return removed
