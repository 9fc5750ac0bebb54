-- Open the client receipt of a level once (see `open_receipt_lib.lua`).
--
-- KEYS: message hash, segments hash, receipt watch. ARGV: level, now (ms).
-- Returns 1 when this call opened it.
return open_receipt(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]) ~= 0 and 1 or 0
