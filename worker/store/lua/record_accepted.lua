-- The carrier took a segment (see `record_accepted_lib.lua`).
--
-- KEYS: segments hash, carrier index, parked receipts of that carrier id.
-- ARGV: seq, carrier id, carrier, `{id}:{seq}`, index TTL (s), state.
return record_accepted(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                       ARGV[6])
