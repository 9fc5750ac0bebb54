"""Import layering, checked: entry → pipeline → store → core (docs/architecture.md).

Every import statement in `worker/` and `producer/` counts, at module level, inside a function
or under `TYPE_CHECKING`. A module may import its own layer and the layers below it, never one
above; `worker` never imports `producer`; the producer never imports the task module; the
development-only parts (the carrier simulator, the embedded Redis) are imported only by entry
points, and themselves import only core.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "producer")

# Lowest first. A module belongs to the layer whose prefix names it most closely.
LAYERS: dict[str, tuple[str, ...]] = {
    # Values and rules that hold no stored data, and the plumbing every side shares.
    "core": (
        "worker.contract",
        "worker.records",
        "worker.errors",
        "worker.settings",
        "worker.clock",
        "worker.encoding",
        "worker.geo",
        "worker.mo.keywords",  # the opt-out words, a rule like geo's countries: no stored data
        "worker.addresses",
        "worker.ssrf",
        "worker.envelope",
        "worker.webhooks",
        "worker.retry_after",
        "worker.http1",
        "worker.http_clients",
        "worker.logs",
        "worker.redis_urls",
    ),
    # The Redis schema: keys, Lua scripts, the stores.
    "store": ("worker.store",),
    # What the tasks do: sending, receipts, carriers, inbound, OTP, recovery, access, metrics.
    "pipeline": (
        "worker.sending",
        "worker.inbound",
        "worker.receipts",
        "worker.carriers",
        "worker.smpp",
        "worker.mo",
        "worker.otp",
        "worker.optouts",
        "worker.keys",
        "worker.quotas",
        "worker.ratelimit",
        "worker.breaker",
        "worker.queueing",
        "worker.celery_app",  # the broker connection: publishing needs it, not the tasks
        "worker.batch_progress",
        "worker.scheduler",
        "worker.reconciler",
        "worker.redelivery",
        "worker.metrics",
    ),
    # Processes and their composition: the API, the CLI, the library, the Celery tasks.
    "entry": (
        "producer",
        "worker.tasks",
        "worker.signals",
        "worker.runtime",
        "worker.smpp.connector",  # the SMPP connector process (`smsq smpp`)
    ),
}
RANK = {name: rank for rank, name in enumerate(LAYERS)}
# `worker` itself (its __init__ imports nothing); not a prefix, or every new module would be core.
EXACTLY = {"worker": "core"}
# Development only: imported by entry points (`smsq up`, the CLI), never by what they run.
DEV_ONLY = ("worker.simulator", "worker.embedded_redis")
# What a deployment runs: the API, the Celery workers, the SMPP connector.
DEPLOYED = ("producer.api", "worker.tasks", "worker.smpp.connector")

# Imports that break a rule today, each with its reason: (importer, imported) -> why.
# The test fails when one of them is no longer there, so the list only shrinks.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # Settings check `SMSQ_CARRIER` against the registered adapters when read, inside the
    # validator (kept lazy so that settings stay cheap to import).
    ("worker.settings", "worker.carriers.adapters"): "settings check the carrier kind",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def breaks(self, rule: str) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}: {rule}"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {
        _module(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, package: bool, known: set[str]
) -> list[str]:
    """The modules an import statement loads: `from a import b` is `a.b` when that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = module.split(".") if package else module.split(".")[:-1]
        parent = parent[: len(parent) - node.level + 1]
        base = ".".join([*parent, base] if base else parent)
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
    ]


def imports_in(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of a `worker` or `producer` module in `path`, the source of `module`."""
    package = path.name == "__init__.py"
    return [
        Import(module, target, node.lineno)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in _targets(node, module, package, known)
        if target.split(".")[0] in PACKAGES
    ]


@cache
def _found() -> tuple[Import, ...]:
    """Every import of one of our modules by another."""
    sources = _sources()
    return tuple(
        each for module, path in sources.items() for each in imports_in(module, path, set(sources))
    )


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    """The layer naming `module` most closely, `"dev"` for development-only parts."""
    if any(_within(module, prefix) for prefix in DEV_ONLY):
        return "dev"
    if module in EXACTLY:
        return EXACTLY[module]
    named = [
        (len(prefix), layer)
        for layer, prefixes in LAYERS.items()
        for prefix in prefixes
        if _within(module, prefix)
    ]
    return max(named)[1] if named else None


def broken_rule(found: Import) -> str | None:
    """The rule `found` breaks, if any."""
    importer, imported = layer_of(found.importer), layer_of(found.imported)
    assert importer is not None, found.importer
    assert imported is not None, found.imported
    if _within(found.importer, "worker") and _within(found.imported, "producer"):
        return "worker never imports producer"
    if _within(found.importer, "producer") and _within(found.imported, "worker.tasks"):
        return "the producer enqueues tasks by name and never imports the task module"
    if imported == "dev" and importer not in ("dev", "entry"):
        return f"development-only parts are imported by entry points only, not by {importer}"
    if importer == "dev":
        return (
            None
            if imported in ("dev", "core")
            else f"development-only parts import core only, not {imported}"
        )
    if imported == "dev":
        return None
    if RANK[imported] > RANK[importer]:
        return f"{importer} must not import the higher layer {imported}"
    return None


def violations(found: Iterable[Import]) -> list[str]:
    return [
        each.breaks(rule)
        for each in found
        if (rule := broken_rule(each)) and (each.importer, each.imported) not in EXCEPTIONS
    ]


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module in _sources() if layer_of(module) is None]
    assert not unplaced, f"place these in LAYERS (tests/unit/test_layers.py): {unplaced}"


def test_a_module_is_placed_by_its_closest_prefix() -> None:
    assert layer_of("worker") == "core"
    assert layer_of("worker.brand_new") is None  # a new module must be placed
    assert layer_of("worker.smpp.link") == "pipeline"
    assert layer_of("worker.smpp.connector") == "entry"
    assert layer_of("worker.simulator.app") == "dev"


def test_no_import_breaks_the_layering() -> None:
    broken = violations(_found())
    assert not broken, "\n".join(broken)


def test_every_exception_is_still_needed() -> None:
    breaking = {(found.importer, found.imported) for found in _found() if broken_rule(found)}
    assert sorted(set(EXCEPTIONS) - breaking) == []


def loaded_by(root: str, found: Iterable[Import]) -> set[str]:
    """The modules importing `root` loads: what it imports, their packages, and so on."""
    graph: dict[str, set[str]] = {}
    for each in found:
        graph.setdefault(each.importer, set()).add(each.imported)
    loaded: set[str] = set()
    todo = [root]
    while todo:
        module = todo.pop()
        if module not in loaded:
            loaded.add(module)
            parts = module.split(".")
            todo += [".".join(parts[:end]) for end in range(1, len(parts))]
            todo += graph.get(module, set())
    return loaded


@pytest.mark.parametrize("root", DEPLOYED)
def test_a_deployed_process_loads_no_development_part(root: str) -> None:
    loaded = loaded_by(root, _found())
    assert root in _sources()
    broken = [
        each.breaks(f"{root} must load no development-only part")
        for each in _found()
        if each.importer in loaded
        and layer_of(each.importer) != "dev"
        and layer_of(each.imported) == "dev"
    ]
    assert not broken, "\n".join(broken)


def test_the_loading_check_sees_through_imports() -> None:
    found = [
        Import("producer.cli", "producer.up", 1),
        Import("producer.up", "worker.embedded_redis", 1),
    ]
    assert loaded_by("producer.cli", found) >= {
        "producer",
        "producer.up",
        "worker",
        "worker.embedded_redis",
    }


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        ("worker.store", "worker.sending", "store must not import the higher layer pipeline"),
        ("worker.contract", "worker.store.keys", "core must not import the higher layer store"),
        ("worker.sending", "worker.tasks", "pipeline must not import the higher layer entry"),
        ("worker.errors", "producer.api", "worker never imports producer"),
        ("producer.desk", "worker.tasks", "the producer enqueues tasks by name"),
        ("worker.sending", "worker.simulator.app", "development-only parts are imported by entry"),
        ("worker.simulator.state", "worker.store", "development-only parts import core only"),
    ],
)
def test_a_forbidden_import_is_named(importer: str, imported: str, rule: str) -> None:
    [message] = violations([Import(importer, imported, 7)])
    assert message.startswith(f"{importer} (line 7) imports {imported}: {rule}")


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("producer.up", "worker.embedded_redis"),
        ("worker.sending", "worker.store.keys"),
        ("worker.simulator.app", "worker.encoding"),
        ("worker.store", "worker.contract"),
    ],
)
def test_an_allowed_import_passes(importer: str, imported: str) -> None:
    assert violations([Import(importer, imported, 1)]) == []


def test_imports_are_found_wherever_they_are(tmp_path: Path) -> None:
    source = tmp_path / "__init__.py"
    source.write_text(
        "import os\n"
        "from worker import contract\n"
        "from . import keys\n"
        "if TYPE_CHECKING:\n"
        "    from .lua_scripts import Script\n"
        "def later() -> None:\n"
        "    import worker.sending\n"
        "    from producer.api import app\n"
    )
    known = {"worker.contract", "worker.store.keys", "worker.sending", "producer.api"}
    found = imports_in("worker.store", source, known)
    assert sorted((each.line, each.imported) for each in found) == [
        (2, "worker.contract"),
        (3, "worker.store.keys"),
        (5, "worker.store.lua_scripts"),
        (7, "worker.sending"),
        (8, "producer.api"),
    ]
