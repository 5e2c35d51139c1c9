-- lib/pool_index.lua (inlined by scripts/gen-lua.ts into every script that moves an endpoint's
-- load or listing): key names mirror shared/keys.ts; reindex keeps the 8 index zsets (pool x
-- country x iptype, each also under "any") in step with the endpoint's load and reservation, and
-- the matching pool:full:<pool>:<country>:<iptype> sets of listed endpoints at their connection cap
-- (so selection can tell "all busy", E_NO_CAPACITY, from "none listed", E_NO_STOCK).
local function epKey(id) return "ep:{" .. id .. "}" end
local function custKey(id) return "ep:{" .. id .. "}:cust" end

local function reindex(id)
  local f = redis.call("HMGET", epKey(id), "pool", "country", "ipType", "listed", "conns", "custs", "maxConns", "maxCusts")
  if not f[1] then return end
  -- score = connection load in [0,1), plus 1 once the customer cap is reached: such an endpoint
  -- can still take more tunnels from the customers already on it, so it stays indexed in [1,2).
  local conns, maxConns = tonumber(f[5]) or 0, tonumber(f[7]) or 1
  local score = conns / maxConns
  if (tonumber(f[6]) or 0) >= (tonumber(f[8]) or 1) then score = score + 1 end
  -- A reserved (dedicated) endpoint serves only its renter: out of every shared index.
  local reserved = redis.call("EXISTS", epKey(id) .. ":reserved") == 1
  local shared = f[4] == "1" and not reserved
  local full = shared and conns >= maxConns
  -- The 8 full sets move together: not full now and not in its own set means none to touch (the
  -- common case, which saves 8 writes on every select and release).
  local touchFull = full or redis.call("SISMEMBER", "pool:full:" .. f[1] .. ":" .. f[2] .. ":" .. f[3], id) == 1
  for _, p in ipairs({ f[1], "any" }) do
    for _, c in ipairs({ f[2], "any" }) do
      for _, t in ipairs({ f[3], "any" }) do
        local suffix = p .. ":" .. c .. ":" .. t
        local idx = "pool:idx:" .. suffix
        if shared and conns < maxConns then redis.call("ZADD", idx, score, id) else redis.call("ZREM", idx, id) end
        if touchFull then
          if full then redis.call("SADD", "pool:full:" .. suffix, id) else redis.call("SREM", "pool:full:" .. suffix, id) end
        end
      end
    end
  end
end
