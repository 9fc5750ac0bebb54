-- Take the jobs due from the durable schedule (`worker.scheduler`).
--
-- KEYS: the schedule (sorted set by due time), the in-flight hash. ARGV: now (ms), most jobs.
-- Each job taken moves to in-flight in the same step, so a scheduler that dies before
-- publishing leaves it there to be published again (`Scheduler.recover`). Returns the jobs.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('HSET', KEYS[2], member, ARGV[1])
end
return due
