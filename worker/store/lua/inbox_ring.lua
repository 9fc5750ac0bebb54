-- Start a drain of the inbox for requests left overdue, unless one runs or is planned in time.
--
-- KEYS: the ring flag. ARGV: now (ms), stale before (ms), flag slack (ms).
-- A running drain (`run:{token}`, renewed as it works) takes them. A planned drain whose time
-- is before `stale before` never came (its task was lost): plan anew. Returns 1 when the
-- caller must start a drain.
local flag = redis.call('GET', KEYS[1])
if flag and (string.sub(flag, 1, 4) == 'run:' or tonumber(flag) >= tonumber(ARGV[2])) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
