"""Chaos runs: the whole system as real processes, broken on purpose, then counted exactly.

Shared by `tests/integration/test_chaos.py` (a few thousand messages per scenario) and
`bench/chaos.py` (20,000): `system` starts and breaks the parts, `scenarios` are the six
(and a half) scenarios of docs/reliability.md §9, `counts` turns the carrier simulator's
per-reference log and the receipt receiver's log into the table both print.
"""
