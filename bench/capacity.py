"""The capacity model (docs/scaling.md): measured per-message costs, scaled to a target rate.

`python -m bench capacity [--scale 0.1] [--only a,b] [--rate 10000,100000] [--utilisation 0.7]`

Runs the end-to-end scenarios a (level-1 receipts) and b (levels 1 + 2) of `bench/e2e.py` at a
small scale, one callback per receipt each way unless `--batched`, and takes from each the CPU
milliseconds every process type spent per message and the Redis commands per message. For each
target rate it prints how many processes of each type that takes when each is kept at
`--utilisation` of one core (a Python process runs on one core at a time: the interpreter lock),
how many Redis cores (a Redis primary executes commands on one core), and where the ceiling is:
one Redis primary, until the store shards.

The carrier simulator and the receipt counter are stand-ins for the carrier and the client and
are not counted; the scheduler and the idle otp and bulk lanes cost time whatever the rate
and are shown apart. The figures come from one shared machine on which every process competes
for the same cores: they are an estimate to plan with, not a promise.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence

from bench.e2e import Cost, run

# Process types sized by the model, in the order printed, with how docs/scaling.md names them.
KINDS = {
    "api": "API process (uvicorn and its batch helper)",
    "send": "send worker process (normal lane)",
    "dlr": "receipt worker process (`dlr`)",
    "carrier-dlr": "carrier-receipt worker process (`carrier-dlr`)",
}
REDIS = "redis"
OTHER = "other"  # the scheduler and the idle lanes: a fixed cost, not one per message
STAND_INS = frozenset({"carrier-sim", "bench.receiver"})
SCENARIOS = {
    "a": "level-1 receipts",
    "b": "level-1 and level-2 receipts",
}


def kind_of(role: str) -> str | None:
    """The process type of a measured role (`role` in `bench/harness.py`); None for the
    stand-ins, which a deployment does not run."""
    if role in STAND_INS:
        return None
    if role == "uvicorn":
        return "api"
    if role.startswith("worker normal"):
        return "send"
    if role == "worker dlr":
        return "dlr"
    if role == "worker carrier-dlr":
        return "carrier-dlr"
    if role == REDIS:
        return REDIS
    return OTHER


def by_kind(cpu_ms: Mapping[str, float]) -> dict[str, float]:
    """CPU ms per message summed by process type (several send processes are one type)."""
    kinds: dict[str, float] = {}
    for role, ms in cpu_ms.items():
        kind = kind_of(role)
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0.0) + max(ms, 0.0)
    return kinds


def carried_by_one(cpu_ms: float, utilisation: float) -> float:
    """Messages/s one process (or one Redis core) carries when kept at `utilisation` of a core."""
    return math.inf if cpu_ms <= 0 else utilisation * 1000 / cpu_ms


def processes_for(rate: float, cpu_ms: float, utilisation: float) -> int:
    """Processes (or cores) of one type a rate takes, each at `utilisation` of a core; at
    least one."""
    needed = rate * cpu_ms / 1000 / utilisation
    return max(1, math.ceil(round(needed, 9)))  # 7.0000000001 is 7, not 8


def cores_for(kinds: Mapping[str, float], rate: float, utilisation: float) -> int:
    """Cores for every sized process type and Redis together (the fixed `other` left out)."""
    total = sum(ms for kind, ms in kinds.items() if kind != OTHER)
    return processes_for(rate, total, utilisation)


def bottleneck(kinds: Mapping[str, float], rate: float, utilisation: float) -> str:
    """Where a rate stops: every process type multiplies; one Redis primary does not."""
    one_primary = carried_by_one(kinds.get(REDIS, 0.0), utilisation)
    if rate <= one_primary:
        return (
            f"{rate:,.0f}/s: more processes suffice; one Redis primary carries "
            f"{one_primary:,.0f}/s at {utilisation:.0%}"
        )
    primaries = processes_for(rate, kinds.get(REDIS, 0.0), utilisation)
    return (
        f"{rate:,.0f}/s: Redis is the ceiling. One primary carries {one_primary:,.0f}/s at "
        f"{utilisation:.0%}; this rate takes {primaries} primaries' worth of Redis CPU, which "
        f"needs the store sharded over a Redis Cluster (not built: docs/scaling.md)"
    )


def table(scenario: str, cost: Cost, rates: Sequence[float], utilisation: float) -> list[str]:
    """The capacity table of one measured scenario, as Markdown lines."""
    kinds = by_kind(cost.cpu_ms)
    rows = [
        f"Scenario {scenario} ({SCENARIOS.get(scenario, '')}), measured at "
        f"{cost.messages_per_second:,.0f} messages/s end to end; "
        f"processes at {utilisation:.0%} of a core:",
        "",
        "| per message | CPU ms | one carries (messages/s) | "
        + " | ".join(f"at {rate:,.0f}/s" for rate in rates)
        + " |",
        "|---|---|---|" + "---|" * len(rates),
    ]
    for kind, name in KINDS.items():
        ms = kinds.get(kind, 0.0)
        counts = " | ".join(str(processes_for(rate, ms, utilisation)) for rate in rates)
        rows.append(f"| {name} | {ms:.2f} | {carried_by_one(ms, utilisation):,.0f} | {counts} |")
    redis_ms = kinds.get(REDIS, 0.0)
    cores = " | ".join(str(processes_for(rate, redis_ms, utilisation)) for rate in rates)
    rows.append(
        f"| Redis cores (one primary executes on one) | {redis_ms:.2f} | "
        f"{carried_by_one(redis_ms, utilisation):,.0f} | {cores} |"
    )
    total = " | ".join(str(cores_for(kinds, rate, utilisation)) for rate in rates)
    sized = sum(ms for kind, ms in kinds.items() if kind != OTHER)
    rows.append(f"| all of the above: cores | {sized:.2f} | | {total} |")
    commands = " | ".join(f"{rate * cost.redis_commands:,.0f}/s" for rate in rates)
    rows.append(f"| Redis commands | {cost.redis_commands:.1f} | | {commands} |")
    left_out = sorted(role for role in cost.cpu_ms if kind_of(role) in (None, OTHER))
    rows += [
        "",
        "Not sized: "
        + ", ".join(f"{role} {cost.cpu_ms[role]:.2f} ms" for role in left_out)
        + " (stand-ins for the carrier and the client; the scheduler and idle lanes cost the "
        "same whatever the rate).",
    ]
    rows += [f"- {bottleneck(kinds, rate, utilisation)}" for rate in rates]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", type=float, default=0.1, help="of bench e2e's counts")
    parser.add_argument("--only", default="a,b", help="scenarios among a, b")
    parser.add_argument("--rate", default="10000,100000", help="target messages/s, comma-separated")
    parser.add_argument("--utilisation", type=float, default=0.7, help="of one core per process")
    parser.add_argument("--batched", action="store_true",
                        help="dlr-batch and carrier receipts 50 per callback")  # fmt: skip
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rate.split(",")]
    only = set(args.only.split(",")) & set(SCENARIOS)
    if not only or not 0 < args.utilisation <= 1:
        parser.error("--only takes a and/or b; --utilisation is in (0, 1]")
    costs: dict[str, Cost] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run(
        args.scale,
        only,
        dlr_batch=args.batched,
        carrier_receipt_batch=50 if args.batched else 1,
        costs=costs,
    )
    mode = "receipts batched both ways" if args.batched else "one callback per receipt each way"
    print(f"bench capacity, {started}, scale {args.scale}, {mode}\n")
    for scenario in sorted(costs):
        print("\n".join(table(scenario, costs[scenario], rates, args.utilisation)), end="\n\n")
