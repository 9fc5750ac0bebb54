"""`python -m bench NAME [args]`: e2e, pipeline, campaigns, encoding, chaos, kannel, api, smpp,
client, capacity."""

from __future__ import annotations

import importlib
import sys

NAMES = (
    "e2e",
    "pipeline",
    "campaigns",
    "encoding",
    "chaos",
    "kannel",
    "api",
    "smpp",
    "client",
    "capacity",
)

if len(sys.argv) < 2 or sys.argv[1] not in NAMES:
    sys.exit(f"usage: python -m bench {{{','.join(NAMES)}}} [args]")
name = sys.argv.pop(1)
module = importlib.import_module(f"bench.{name}")
sys.argv[0] = f"python -m bench {name}"
module.main()
