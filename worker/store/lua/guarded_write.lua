-- A send's checks and writes in one step (`producer.gate`): the key's charge, its
-- Idempotency-Key, its refusals (opt-outs), then its writes, or nothing.
--
-- KEYS: the key's record, rate, daily counter, Idempotency-Key record; then the sorted set of
-- each refusal (R of them); then the key of each write, in order.
-- ARGV[1..5]: the charge (interval µs, burst, cost, daily limit, counter TTL); ARGV[6] the
-- Idempotency-Key record to keep ('' = no Idempotency-Key), ARGV[7] its TTL; ARGV[8] R, then
-- ARGV[9..8+R] each refusal's member; then the writes: command, argument count n, then its n
-- arguments after the key (only HSET, RPUSH, ZADD, LPUSH).
-- Returns {0, 0} written; {1, wait_us} or {2, used} refused by the limits (nothing written);
-- {3, 0} revoked key; {4, record} the Idempotency-Key was used before (the call is counted
-- toward the rate, nothing else happens); {5, r} refusal r's member is in its set (the call is
-- counted toward the rate, nothing is written). Needs `charge_lib`.
local WRITES = {HSET = true, RPUSH = true, ZADD = true, LPUSH = true}
local unpack = unpack or table.unpack
if redis.call('HGET', KEYS[1], 'revoked') ~= '0' then return {3, 0} end
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
if ARGV[6] ~= '' then
  local used = redis.call('GET', KEYS[4])
  if used then
    local verdict = charge(KEYS[2], KEYS[3], interval, burst, 0, 0, 0)
    if verdict[1] ~= 0 then return verdict end
    return {4, used}
  end
end
local refusals = tonumber(ARGV[8])
for r = 1, refusals do
  if redis.call('ZSCORE', KEYS[4 + r], ARGV[8 + r]) then
    local verdict = charge(KEYS[2], KEYS[3], interval, burst, 0, 0, 0)
    if verdict[1] ~= 0 then return verdict end
    return {5, r}
  end
end
local verdict = charge(KEYS[2], KEYS[3], interval, burst, tonumber(ARGV[3]),
                       tonumber(ARGV[4]), tonumber(ARGV[5]))
if verdict[1] ~= 0 then return verdict end
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6], 'EX', tonumber(ARGV[7])) end
local k, i = 5 + refusals, 9 + refusals
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if not WRITES[ARGV[i]] then return redis.error_reply('not a write: ' .. ARGV[i]) end
  redis.call(ARGV[i], KEYS[k], unpack(ARGV, i + 2, i + 1 + n))
  k, i = k + 1, i + 2 + n
end
return {0, 0}
