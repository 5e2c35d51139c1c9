-- lib/release_counts.lua (inlined after lib/pool_index.lua): gives back one tunnel's connection
-- and customer counts on an endpoint; an unlisted endpoint with no tunnels left is removed.
local function releaseCounts(id, who)
  if redis.call("EXISTS", epKey(id)) == 0 then return end
  if tonumber(redis.call("HINCRBY", epKey(id), "conns", -1)) < 0 then redis.call("HSET", epKey(id), "conns", 0) end
  local c = tonumber(redis.call("HINCRBY", custKey(id), who, -1))
  if c <= 0 then
    redis.call("HDEL", custKey(id), who)
    if tonumber(redis.call("HINCRBY", epKey(id), "custs", -1)) < 0 then redis.call("HSET", epKey(id), "custs", 0) end
  end
  local f = redis.call("HMGET", epKey(id), "listed", "conns")
  if f[1] ~= "1" and tonumber(f[2]) == 0 then
    redis.call("DEL", epKey(id), custKey(id))
  else
    reindex(id)
  end
end
