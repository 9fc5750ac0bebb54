"""The log files of `smsq up`'s children (`<data_dir>/logs/<child>.log`, the previous run's as
`<child>.log.1`): `smsq logs` shows them, `smsq logs -f` and `smsq up --verbose` follow them."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SUFFIX = ".log"


def log_files(log_dir: Path, child: str | None = None) -> list[Path]:
    """The current log of `child`, or of every child; FileNotFoundError naming what is missing."""
    if child is not None:
        path = log_dir / f"{child}{SUFFIX}"
        if not path.is_file():
            known = ", ".join(p.stem for p in log_files(log_dir)) or "none yet"
            raise FileNotFoundError(f"no log for {child!r} in {log_dir} (children: {known})")
        return [path]
    if not log_dir.is_dir():
        raise FileNotFoundError(f"no logs in {log_dir}: smsq up has not run with this data dir")
    return sorted(log_dir.glob(f"*{SUFFIX}"))


def last_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file (all of them for count < 0)."""
    with path.open(errors="replace") as handle:
        if count < 0:
            return handle.read().splitlines()
        return list(deque(handle.read().splitlines(), maxlen=count))


@dataclass
class _Open:
    handle: IO[str]
    inode: int
    partial: str = ""


@dataclass
class Follower:
    """New lines of the log files as they are written: from the current end of each file
    present at the first poll (from their start with `from_start`), from the start of files
    that appear or are replaced later (a new run rotates them)."""

    log_dir: Path
    child: str | None = None
    from_start: bool = False
    _open: dict[Path, _Open] = field(default_factory=dict)
    _started: bool = False

    def poll(self) -> list[tuple[str, str]]:
        """(child, line) for every complete line written since the last call."""
        found: list[tuple[str, str]] = []
        paths = self._paths()
        for path in paths:
            opened = self._reopen_if_replaced(path)
            if opened is None:
                continue
            text = opened.partial + opened.handle.read()
            *lines, opened.partial = text.split("\n")
            found += [(path.name.removesuffix(SUFFIX), line) for line in lines]
        self._started = True
        return found

    def close(self) -> None:
        for opened in self._open.values():
            opened.handle.close()
        self._open.clear()

    def _paths(self) -> list[Path]:
        if self.child is not None:
            return [self.log_dir / f"{self.child}{SUFFIX}"]
        return sorted(self.log_dir.glob(f"*{SUFFIX}")) if self.log_dir.is_dir() else []

    def _reopen_if_replaced(self, path: Path) -> _Open | None:
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return None
        opened = self._open.get(path)
        if opened is not None and opened.inode == inode:
            return opened
        if opened is not None:
            opened.handle.close()
        handle = path.open(errors="replace")
        if not self._started and not self.from_start:
            handle.seek(0, os.SEEK_END)
        self._open[path] = _Open(handle, inode)
        return self._open[path]
