-- Take or keep the scheduler's lock (`worker.scheduler`): one scheduler works at a time.
--
-- KEYS: the lock. ARGV: this scheduler's token, the lock's TTL (ms).
-- Only a free lock or one this scheduler holds is (re)set. Returns 1 if held, else 0.
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
