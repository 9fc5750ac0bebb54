-- Charge one call of an API key (`worker.quotas`): its rate and its daily quota, at once.
--
-- KEYS: the rate's arrival time, the daily counter, the key's record.
-- ARGV: interval (µs, 0 = no rate), burst, cost, daily limit (0 = none), counter TTL (s).
-- A revoked (or gone) key is refused here, so that a revocation holds from the next call on
-- even where the API caches key lookups. Returns {3, 0} for a revoked key, else `charge`'s
-- answer. Needs `charge_lib`.
if redis.call('HGET', KEYS[3], 'revoked') ~= '0' then return {3, 0} end
return charge(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
              tonumber(ARGV[4]), tonumber(ARGV[5]))
