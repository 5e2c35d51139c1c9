-- select_scan (benchmark baseline only, never deployed): the O(n) selection we are measuring against.
-- KEYS[1]  pool:listed set   ARGV[1] pool ("any" = all)   ARGV[2] country ("any" = all)
-- returns  the least-loaded endpoint id with free capacity, or false
local best, bestScore = nil, nil
for _, id in ipairs(redis.call("SMEMBERS", KEYS[1])) do
  local f = redis.call("HMGET", "ep:{" .. id .. "}", "pool", "country", "conns", "maxConns", "listed")
  if f[5] == "1" and (ARGV[1] == "any" or f[1] == ARGV[1]) and (ARGV[2] == "any" or f[2] == ARGV[2]) then
    local score = (tonumber(f[3]) or 0) / (tonumber(f[4]) or 1)
    if score < 1 and (bestScore == nil or score < bestScore) then best, bestScore = id, score end
  end
end
return best
