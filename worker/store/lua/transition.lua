-- Move a message from one of some states to another, atomically.
--
-- KEYS: message hash, events list, submit watch, delivery watch.
-- ARGV: the new state, its event (JSON), now (ms), the states it may move from...
-- Returns 1 if it moved (see `transition_lib.lua`), 0 if it was in none of them or is gone.
local allowed = {}
for i = 4, #ARGV do allowed[ARGV[i]] = true end
return transition(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], allowed)
