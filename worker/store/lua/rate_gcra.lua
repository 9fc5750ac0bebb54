-- Reserve the next request slot of a shared rate (`worker.ratelimit.RateLimiter`): GCRA on
-- Redis's clock, so every process shares one limit.
--
-- KEYS: the theoretical arrival time (µs). ARGV: interval (µs), burst, longest wait (µs).
-- A slot at most the longest wait away is taken (the caller sleeps `wait` first); a later one
-- is not. Returns {granted 0|1, wait µs}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
if wait > max_wait then return {0, wait} end
if wait < 0 then wait = 0 end
local ttl_ms = math.floor((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, wait}
