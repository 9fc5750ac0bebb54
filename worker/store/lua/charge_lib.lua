-- charge(rate_key, daily_key, interval, burst, cost, limit, ttl): take one call from an API
-- key's rate (GCRA on Redis's clock; `interval` µs, 0 = no rate, bursts of `burst`) and `cost`
-- messages from its daily quota (`limit`, 0 = none; the counter kept `ttl` s), or nothing.
-- Returns {0, 0} (taken), {1, wait_us} (the rate refuses) or {2, used} (the quota refuses).
-- Used by `charge.lua` and the API's guarded writes (`guarded_write.lua`).
local function charge(rate_key, daily_key, interval, burst, cost, limit, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local new_tat = nil
  if interval > 0 then
    local tat = tonumber(redis.call('GET', rate_key) or '0')
    if tat < now then tat = now end
    new_tat = tat + interval
    local wait = new_tat - burst * interval - now
    if wait > 0 then return {1, wait} end
  end
  if limit > 0 and cost > 0 then
    local used = tonumber(redis.call('GET', daily_key) or '0')
    if used + cost > limit then return {2, used} end
    redis.call('INCRBY', daily_key, cost)
    redis.call('EXPIRE', daily_key, ttl)
  end
  if new_tat then
    local ttl_ms = math.floor((new_tat - now) / 1000) + 1000
    redis.call('SET', rate_key, string.format('%.0f', new_tat), 'PX', ttl_ms)
  end
  return {0, 0}
end
