"""Disk fault: fill a filesystem to a percentage with one reserved file (``fallocate``).

    fault = disk.Fill("/mnt/wal", percent=100, max_bytes=256 << 20)
    faults.inject(drill, fault, host="lab")       # heal: the file is removed

Bounded twice: never on the root filesystem of the host (the fault is then *not applicable*: the
machine itself would run out of space), and never more than ``max_bytes``. The file is
``<mount>/.drillbook-fill-<tag>``: a person who finds it knows what it is and that it can go.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..shells.base import Shell
from .base import FaultError, missing_tool

FILL_PREFIX = ".drillbook-fill-"


@dataclass(frozen=True)
class Usage:
    """One filesystem as ``df`` reports it."""

    mount: str
    size: int
    used: int
    available: int

    def to_fill(self, percent: float, max_bytes: int) -> int:
        """Bytes to reserve so that ``percent`` of the filesystem is used (at most what is
        available and ``max_bytes``; 0 if it is already that full)."""
        wanted = int(self.size * percent / 100) - self.used
        return max(0, min(wanted, self.available, max_bytes))


def usage(shell: Shell, path: str) -> Usage:
    done = shell.run(f"df -P -B1 {shlex.quote(path)} | tail -n 1", timeout=15, check=True)
    fields = done.stdout.split()
    if len(fields) < 6 or not all(f.isdigit() for f in fields[1:4]):
        raise FaultError(f"cannot read the usage of {path} from df: {done.stdout.strip()!r}")
    return Usage(mount=" ".join(fields[5:]), size=int(fields[1]), used=int(fields[2]), available=int(fields[3]))


class Fill:
    """Fill the filesystem holding ``path`` to ``percent`` (100: to the brim), at most ``max_bytes``."""

    def __init__(self, path: str, percent: float = 100.0, max_bytes: int = 1 << 30, tag: str = "drill",
                 title: str | None = None) -> None:
        if not 0 < percent <= 100:
            raise ValueError("percent must be in (0, 100]")
        if not re.match(r"^[A-Za-z0-9_-]{1,40}$", tag):
            raise ValueError(f"{tag!r} cannot be part of a file name")
        self.path, self.percent, self.max_bytes, self.tag = path, percent, max_bytes, tag
        self.title = title or f"Fill the filesystem of {path} to {percent:g} %"
        self.file: str | None = None

    def plan(self) -> str:
        return (f"reserve a file ({FILL_PREFIX}{self.tag}, fallocate) on the filesystem of {self.path} until it is "
                f"{self.percent:g} % used, at most {self.max_bytes >> 20} MiB; never on the root filesystem; "
                "heal: remove the file")

    def check(self, shell: Shell) -> str | None:
        if missing_tool(shell, "fallocate"):
            return f"fallocate is not installed on {shell.name}"
        try:
            fs, root = usage(shell, self.path), usage(shell, "/")
        except FaultError as exc:
            return exc.message
        same = shell.run(f"test \"$(stat -c %d {shlex.quote(self.path)})\" = \"$(stat -c %d /)\"", timeout=15).ok
        if fs.mount == "/" or same or fs.mount == root.mount:
            return f"{self.path} is on the root filesystem of {shell.name}: it is never filled (give it a filesystem of its own)"
        return None

    def inject(self, shell: Shell) -> str:
        fs = usage(shell, self.path)
        self.file = f"{fs.mount.rstrip('/')}/{FILL_PREFIX}{self.tag}"
        size = fs.to_fill(self.percent, self.max_bytes)
        if size <= 0:
            return f"{fs.mount} is already {fs.used * 100 // max(fs.size, 1)} % used: nothing reserved"
        shell.run(["fallocate", "-l", str(size), self.file], timeout=60, check=True)
        after = usage(shell, self.path)
        return f"reserved {size} bytes in {self.file}; {fs.mount} is {after.used * 100 / max(after.size, 1):.1f} % used"

    def heal(self, shell: Shell) -> str:
        if self.file is None:
            return "no file was reserved"
        shell.run(["rm", "-f", self.file], timeout=30, check=True)
        return f"removed {self.file}"
