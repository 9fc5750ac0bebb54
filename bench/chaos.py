"""The chaos scenarios at scale: `python -m bench.chaos [--messages 20000] [--scenario NAME]...`.

Runs each scenario of `tests.chaos.scenarios` (the same ones `tests/integration/test_chaos.py`
runs with 1,500 messages) on a fresh system of real processes and prints one table: SMS
submitted to the carrier, unique client references, duplicates, receipts expected / received,
lost, and what the store counted on the way (docs/reliability.md explains each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.chaos.counts import ChaosResult, table
from tests.chaos.scenarios import SCENARIOS, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="per scenario")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default all"
    )
    parser.add_argument("--keep", action="store_true", help="keep each run's logs and AOF")
    args = parser.parse_args()
    results: list[ChaosResult] = []
    for name in args.scenario or list(SCENARIOS):
        workdir = Path(tempfile.mkdtemp(prefix="smsq-chaos-"))
        started = time.monotonic()
        try:
            results.append(run(SCENARIOS[name], args.messages, workdir))
        except AssertionError as exc:
            print(f"{name}: FAILED ({exc}); logs in {workdir}", flush=True)
            continue
        print(f"{name}: done in {time.monotonic() - started:.0f} s", flush=True)
        print(table(results[-1:]), flush=True)  # each row as it comes: a long run may be cut
        if not args.keep:
            _remove(workdir)
    print()
    print(table(results))


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
