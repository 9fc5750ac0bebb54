-- Admit one OTP send against its cooldown and every limit, or none (`worker.otp.policy`).
--
-- KEYS[1]: the cooldown key (its value: when the cooldown ends); KEYS[2..]: the limits, the
-- key's own first, then the shared ceilings.
-- ARGV: now ms, member, cooldown ms (0 = none), how many of the limits are the key's own, then
-- per limit (KEYS[i]: ARGV[3i - 1 .. 3i + 1]) its count, window ms and kind (0: sliding log;
-- 1: a counter that ends with its key).
-- A send is counted everywhere or nowhere. Returns {index, wait ms}: 0 = the cooldown, i = the
-- limit KEYS[i+1], -1 = admitted and counted. A refusal names the key's own limit with the
-- longest wait, else the ceiling with the longest.
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[3])
local own = tonumber(ARGV[4])
if cooldown > 0 then
  local until_ms = tonumber(redis.call('GET', KEYS[1]) or '0')
  if until_ms > now then return {0, until_ms - now} end
end
local worst = {-1, -1}
local wait = {0, 0}
for i = 2, #KEYS do
  local base = 3 * i
  local count, window = tonumber(ARGV[base - 1]), tonumber(ARGV[base])
  local until_free = -1
  if ARGV[base + 1] == '1' then
    if tonumber(redis.call('GET', KEYS[i]) or '0') >= count then
      until_free = redis.call('PTTL', KEYS[i])
      if until_free < 0 then until_free = window end
    end
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    local n = redis.call('ZCARD', KEYS[i])
    if n >= count then
      local freeing = redis.call('ZRANGE', KEYS[i], n - count, n - count, 'WITHSCORES')
      until_free = tonumber(freeing[2]) + window - now
    end
  end
  if until_free >= 0 then
    local group = (i - 1 <= own) and 1 or 2
    if worst[group] < 0 or until_free > wait[group] then
      worst[group], wait[group] = i - 1, until_free
    end
  end
end
for group = 1, 2 do
  if worst[group] >= 0 then return {worst[group], wait[group]} end
end
if cooldown > 0 then redis.call('SET', KEYS[1], now + cooldown, 'PX', cooldown) end
for i = 2, #KEYS do
  local base = 3 * i
  if ARGV[base + 1] == '1' then
    redis.call('INCR', KEYS[i])
  else
    redis.call('ZADD', KEYS[i], now, ARGV[2])
  end
  redis.call('PEXPIRE', KEYS[i], ARGV[base])
end
return {-1, 0}
