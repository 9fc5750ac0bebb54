-- A drain renews or gives up its hold on an endpoint.
--
-- KEYS: the endpoint's ring flag. ARGV: the drain's token, lease (ms; 0 = give it up).
-- Only the drain holding the flag (`run:{token}`) changes it: renews it for `lease` ms, or
-- deletes it (the next receipt routed there starts a drain). Returns 1 if it held it.
if redis.call('GET', KEYS[1]) ~= 'run:' .. ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
