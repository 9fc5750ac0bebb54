-- The carrier took the last segment: record it and finish the submission, atomically.
--
-- KEYS: message hash, segments hash, events list, submit watch, delivery watch, receipt watch,
-- carrier index, parked receipts of the carrier id.
-- ARGV: segments in the submission, now (ms), seq, carrier id, carrier, `{id}:{seq}`,
-- index TTL (s), state (`accepted` or `sent`).
-- When receipts were parked for the carrier id nothing is finished (the caller applies them,
-- then finishes). Returns {recorded now, parked receipts} or {recorded now, parked,
-- finish's answer or nil}.
local r = record_accepted(KEYS[2], KEYS[7], KEYS[8], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
                          ARGV[8])
if #r[2] > 0 then return r end
-- A segment recorded just now has ARGV[8] as its state (one segment: no need to read it back).
local only = nil
if r[1] == 1 and ARGV[3] == '1' then only = ARGV[8] end
return {r[1], r[2], finish_submission(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
                                      ARGV[1], ARGV[2], only)}
