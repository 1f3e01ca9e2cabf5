"""Steady-state facts about a host, read through a shell (local or SSH): reachable, disk, load."""
from __future__ import annotations

from dataclasses import dataclass

from ..shells.base import Shell


@dataclass(frozen=True)
class Disk:
    path: str
    size_kb: int
    free_kb: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_kb / self.size_kb if self.size_kb else 0.0


def reachable(shell: Shell) -> str:
    """The host's name as it reports it; raises if the command cannot run there."""
    return shell.run("uname -n", timeout=15, check=True).stdout.strip()


def disk(shell: Shell, path: str = "/") -> Disk:
    """Free space of the filesystem holding ``path`` (POSIX ``df -P``: 1024-byte blocks)."""
    lines = shell.run(["df", "-P", "-k", path], timeout=15, check=True).stdout.strip().splitlines()
    fields = lines[-1].split()
    return Disk(path=path, size_kb=int(fields[1]), free_kb=int(fields[3]))


def load_per_cpu(shell: Shell) -> float:
    """One-minute load average divided by the number of CPUs."""
    out = shell.run("cat /proc/loadavg; getconf _NPROCESSORS_ONLN", timeout=15, check=True).stdout.split("\n")
    load = float(out[0].split()[0])
    cpus = max(1, int(out[1].strip()))
    return load / cpus
