-- Point a challenge at its resent SMS (`worker.otp.challenges`, the resend).
--
-- KEYS: the challenge hash. ARGV: the message id it points at, the new message id, now (ms),
-- most sends.
-- Only a pending, unexpired challenge that still points at ARGV[1] and was sent fewer than
-- ARGV[4] times moves (and counts the send). Returns 1 if it moved, else 0.
local h = redis.call('HMGET', KEYS[1], 'status', 'message_id', 'expires_at', 'sends')
if h[1] ~= 'pending' or h[2] ~= ARGV[1] then return 0 end
if tonumber(h[3]) <= tonumber(ARGV[3]) or tonumber(h[4]) >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'message_id', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'sends', 1)
return 1
