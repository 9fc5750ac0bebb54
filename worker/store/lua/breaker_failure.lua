-- Count a carrier failure (`worker.breaker.CircuitBreaker.failure`).
--
-- KEYS: the breaker hash. ARGV: failures that open it, cooldown (µs), keep the count (ms).
-- The breaker opens at the threshold, and a failure while open or half-open (the trial)
-- opens it again for a whole cooldown. Returns 1 if it (re)opened, else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > 0 or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.0f', now + tonumber(ARGV[2])))
  redis.call('HDEL', KEYS[1], 'trial_until')
  return 1
end
return 0
