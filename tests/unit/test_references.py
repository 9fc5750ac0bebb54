"""Comments and docs point only to files in the repository, and carry no issue numbers."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", ".smsq", "__pycache__", ".jasmin", ".ci"}
SUFFIXES = {".py", ".lua", ".md", ".toml"}
THIS = Path(__file__).resolve()
# A path into the repository: `worker/store/keys.py`, `docs/reliability.md`, `tests/chaos/`
# (globs and templates such as `lua/mo_*.lua` are not checked).
REPO_PATH = re.compile(r"(?<![\w/.-])((?:worker|producer|tests|docs|bench)/[\w./*{}-]*)")
# Documents that are not in the repository, and issue numbers: `(#9)`, `ingest, #9)`, `issue 4`
# (not an upstream project's `jasmin#1236`).
ELSEWHERE = re.compile(r"\b(?:DESIGN|engineering)\.md\b|\((?:[^()]*, )?#\d+\)|\bissue #?\d+")


def _files() -> list[Path]:
    found = []
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.endswith(".egg-info")]
        found += [Path(top, n) for n in names if Path(n).suffix in SUFFIXES]
    return sorted(path for path in found if path != THIS)


def _named(line: str) -> list[str]:
    refs = (match.group(1).rstrip(".") for match in REPO_PATH.finditer(line))
    return [ref for ref in refs if not {"*", "{", "}"} & set(ref)]


def _lines(paths: list[Path]) -> list[tuple[str, str]]:
    return [
        (f"{path.relative_to(ROOT)}:{number}", line)
        for path in paths
        for number, line in enumerate(path.read_text().splitlines(), 1)
    ]


def test_every_path_named_exists() -> None:
    missing = [
        f"{where}: {ref}"
        for where, line in _lines(_files())
        for ref in _named(line)
        if not (ROOT / ref).exists()
    ]
    assert missing == []


def test_nothing_points_outside_the_repository() -> None:
    found = [
        f"{where}: {line.strip()}"
        for where, line in _lines(_files())
        if ELSEWHERE.search(line)
    ]
    assert found == []


def test_the_checks_see_what_they_look_for() -> None:
    assert _named("see `worker/nothing_here.py`.") == ["worker/nothing_here.py"]
    assert _named("`worker/store/lua/mo_*.lua`") == []
    assert ELSEWHERE.search("batch ingest (#9)")
    assert ELSEWHERE.search("(batch ingest, #9)")
    assert ELSEWHERE.search("(DESIGN.md §3)")
    assert not ELSEWHERE.search("(UAX #29, jookies/jasmin#1236)")
