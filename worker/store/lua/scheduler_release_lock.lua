-- Give the scheduler's lock up (`worker.scheduler`, on stop), so a standby leads at its next poll.
--
-- KEYS: the lock. ARGV: this scheduler's token.
-- Only a lock this scheduler still holds is deleted (it may have lapsed and been taken since).
-- Returns 1 if deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
