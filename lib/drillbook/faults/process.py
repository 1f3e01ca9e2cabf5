"""Process faults: kill (SIGKILL/SIGTERM) or freeze (SIGSTOP, healed by SIGCONT) a process, or
restart a service, found by pid file, by name under a user, or as a systemd unit.

    target = process.ByPidFile(".lab/data/pg2/postmaster.pid", tree=True)   # the postmaster and its children
    faults.inject(drill, process.Freeze(target), host="lab")
    faults.inject(drill, process.Kill(process.ByName("redis-server", user="redis"), restart="systemctl start redis"))

A kill cannot be undone by the fault itself: its heal runs the ``restart`` command it was given
(else it says who must bring the process back, e.g. the drill's own cleanup). A freeze remembers
the pids it stopped and continues exactly those.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Protocol

from ..shells.base import Shell
from .base import FaultError, is_root, missing_tool

SIGNALS = ("KILL", "TERM", "STOP", "CONT", "INT", "HUP")


class Target(Protocol):
    """How to find the process(es) a fault acts on."""

    def describe(self) -> str: ...

    def pids(self, shell: Shell) -> list[int]: ...


def _pids(text: str) -> list[int]:
    return sorted({int(word) for word in text.split() if word.isdigit() and int(word) > 1})


def _with_children(shell: Shell, pids: list[int]) -> list[int]:
    """``pids`` and every descendant (a postmaster's backends, walreceiver, …)."""
    found, frontier = set(pids), list(pids)
    while frontier:
        done = shell.run(["pgrep", "-P", ",".join(map(str, frontier))], timeout=15)
        frontier = [p for p in _pids(done.stdout) if p not in found]
        found.update(frontier)
    return sorted(found)


@dataclass(frozen=True)
class ByPidFile:
    """The process whose pid is the first line of ``path`` (a PostgreSQL postmaster.pid, a daemon's .pid)."""

    path: str
    tree: bool = False  # also its descendants

    def describe(self) -> str:
        return f"the process in {self.path}" + (" and its children" if self.tree else "")

    def pids(self, shell: Shell) -> list[int]:
        done = shell.run(f"head -n 1 {shlex.quote(self.path)}", timeout=15)
        found = _pids(done.stdout.strip().split("\n")[0]) if done.ok else []
        return _with_children(shell, found) if self.tree and found else found


@dataclass(frozen=True)
class ByName:
    """Processes named exactly ``name`` run by ``user`` (``pgrep -x -u``)."""

    name: str
    user: str
    tree: bool = False

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_.:+-]{1,64}$", self.name):
            raise ValueError(f"{self.name!r} is not a process name")

    def describe(self) -> str:
        return f"processes named {self.name} of user {self.user}"

    def pids(self, shell: Shell) -> list[int]:
        found = _pids(shell.run(["pgrep", "-x", "-u", self.user, self.name], timeout=15).stdout)
        return _with_children(shell, found) if self.tree and found else found


@dataclass(frozen=True)
class ByUnit:
    """The main process of a systemd unit."""

    unit: str

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_.@:-]{1,128}$", self.unit):
            raise ValueError(f"{self.unit!r} is not a systemd unit name")

    def describe(self) -> str:
        return f"the main process of unit {self.unit}"

    def pids(self, shell: Shell) -> list[int]:
        return _pids(shell.run(["systemctl", "show", "-p", "MainPID", "--value", self.unit], timeout=15).stdout)


def _systemd(shell: Shell) -> str | None:
    if missing_tool(shell, "systemctl") or not shell.run("test -d /run/systemd/system", timeout=15).ok:
        return f"systemd does not run on {shell.name}"
    return None


def _signal(shell: Shell, sig: str, pids: list[int]) -> None:
    shell.run(["kill", f"-{sig}", *map(str, pids)], timeout=15, check=True)


def _check_target(shell: Shell, target: Target) -> str | None:
    if isinstance(target, ByUnit) and (reason := _systemd(shell)):
        return reason
    if missing_tool(shell, "pgrep"):
        return f"pgrep is not installed on {shell.name}"
    if not target.pids(shell):
        return f"no process found: {target.describe()}"
    return None


class Kill:
    """Send SIGKILL (default) or SIGTERM to the target; heal with ``restart`` (a shell command), if given."""

    def __init__(self, target: Target, signal: str = "KILL", restart: str | None = None,
                 title: str | None = None) -> None:
        if signal not in ("KILL", "TERM"):
            raise ValueError("Kill sends KILL or TERM")
        self.target, self.signal, self.restart = target, signal, restart
        self.title = title or f"Kill {target.describe()} (SIG{signal})"
        self.killed: list[int] = []

    def plan(self) -> str:
        back = f"; heal: {self.restart}" if self.restart else "; nothing restarts it but the drill's own cleanup"
        return f"send SIG{self.signal} to {self.target.describe()}{back}"

    def check(self, shell: Shell) -> str | None:
        return _check_target(shell, self.target)

    def inject(self, shell: Shell) -> str:
        pids = self.target.pids(shell)
        if not pids:
            raise FaultError(f"no process to kill: {self.target.describe()}")
        self.killed = pids
        _signal(shell, self.signal, pids)
        return f"SIG{self.signal} sent to {', '.join(map(str, pids))}"

    def heal(self, shell: Shell) -> str:
        if not self.restart:
            return "nothing to undo here: the drill's own cleanup brings the process back"
        shell.run(self.restart, timeout=120, check=True)
        return f"ran {self.restart}"


class Freeze:
    """SIGSTOP the target (it holds its sockets and answers nothing); heal: SIGCONT the same pids."""

    def __init__(self, target: Target, title: str | None = None) -> None:
        self.target = target
        self.title = title or f"Freeze {target.describe()} (SIGSTOP)"
        self.frozen: list[int] = []

    def plan(self) -> str:
        return f"send SIGSTOP to {self.target.describe()}; heal: SIGCONT to the same processes"

    def check(self, shell: Shell) -> str | None:
        return _check_target(shell, self.target)

    def inject(self, shell: Shell) -> str:
        pids = self.target.pids(shell)
        if not pids:
            raise FaultError(f"no process to freeze: {self.target.describe()}")
        self.frozen = pids  # first: a partly sent SIGSTOP is still continued
        _signal(shell, "STOP", pids)
        return f"SIGSTOP sent to {', '.join(map(str, pids))}"

    def heal(self, shell: Shell) -> str:
        alive = [p for p in self.frozen if shell.run(["kill", "-0", str(p)], timeout=15).ok]
        if alive:
            _signal(shell, "CONT", alive)
        return f"SIGCONT sent to {', '.join(map(str, alive))}" if alive else "no frozen process left"


class RestartService:
    """``systemctl restart`` a unit; heal: make sure it runs (``systemctl start``). Needs root and systemd."""

    def __init__(self, unit: str, title: str | None = None) -> None:
        ByUnit(unit)  # validates the name
        self.unit = unit
        self.title = title or f"Restart service {unit}"

    def plan(self) -> str:
        return f"systemctl restart {self.unit}; heal: systemctl start {self.unit}"

    def check(self, shell: Shell) -> str | None:
        if reason := _systemd(shell):
            return reason
        return None if is_root(shell) else f"restarting {self.unit} needs root on {shell.name}"

    def inject(self, shell: Shell) -> str:
        shell.run(["systemctl", "restart", self.unit], timeout=120, check=True)
        return f"{self.unit} restarted"

    def heal(self, shell: Shell) -> str:
        shell.run(["systemctl", "start", self.unit], timeout=120, check=True)
        return f"{self.unit} running"
