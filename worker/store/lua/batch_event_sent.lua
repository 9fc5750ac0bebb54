-- A batch callback event was delivered: remember it, unless a newer event replaced it meanwhile.
--
-- KEYS: the batch hash. ARGV: the delivered event's signature (its counters, as JSON).
-- Sets `callback_sent` to the signature when `cb:event_sig` still holds it; returns 1 then,
-- else 0 (the newer pending event is delivered by its own drain).
if redis.call('HGET', KEYS[1], 'cb:event_sig') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'callback_sent', ARGV[1])
return 1
