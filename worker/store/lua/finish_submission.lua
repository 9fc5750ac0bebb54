-- After every segment was tried: the submission outcome, set once, and the client receipt it
-- opens (see `finish_submission_lib.lua`).
--
-- KEYS: message hash, segments hash, events list, submit watch, delivery watch, receipt watch.
-- ARGV: segments in the submission, now (ms).
-- Returns {outcome, opened level or 0}, or nil while a segment is open.
return finish_submission(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[2])
