-- May a request go to the carrier now? (`worker.breaker.CircuitBreaker.allow`)
--
-- KEYS: the breaker hash. ARGV: the half-open trial's lease (µs).
-- A closed breaker lets every request through; an open one none until it cools down; then one
-- request at a time is the trial, holding it for its lease. Returns {0 no | 1 yes | 2 as the
-- trial, wait µs}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {1, 0} end
if now < open_until then return {0, open_until - now} end
local trial_until = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
if now < trial_until then return {0, trial_until - now} end
redis.call('HSET', KEYS[1], 'trial_until', string.format('%.0f', now + tonumber(ARGV[1])))
return {2, 0}
