-- A newer code replaces a challenge (`worker.otp.challenges`).
--
-- KEYS: the challenge hash. ARGV: none.
-- Only a pending challenge becomes superseded. Returns its message id then, else false.
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return false end
redis.call('HSET', KEYS[1], 'status', 'superseded')
return redis.call('HGET', KEYS[1], 'message_id')
