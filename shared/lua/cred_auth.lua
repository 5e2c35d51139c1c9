-- cred_auth: the gateway's login lookup in one round trip (gateway-node/auth.ts): the failed-login
-- counter of the client's address, the key its secret names, and that key's cached credential.
-- Key names built here mirror shared/keys.ts (cred:{keyId}, credused:{keyId}).
-- KEYS[1]  rl:gwauth:<address>:<minute> failed-login counter
-- KEYS[2]  credsecret:{sha256 of the pak_ secret} -> keyId
-- ARGV[1]  "1" to look the secret up, "0" when it is malformed (never read)
-- returns  {failures, keyId or false, bytes used or false, field, value, ... of cred:{keyId}}
local failures = tonumber(redis.call("GET", KEYS[1])) or 0
local keyId = false
if ARGV[1] == "1" then keyId = redis.call("GET", KEYS[2]) end
local out = { failures, keyId, false }
if keyId then
  out[3] = redis.call("GET", "credused:{" .. keyId .. "}")
  local h = redis.call("HGETALL", "cred:{" .. keyId .. "}")
  for i = 1, #h do out[#out + 1] = h[i] end
end
return out
