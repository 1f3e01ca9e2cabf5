"""One interface for every fault a drill injects, and the one way a drill injects it.

    fault = network.Partition(client=Endpoint("127.0.0.1", user="postgres"), server=Endpoint("127.0.0.1", 5432),
                              table=network.table_name(drill.project, "standby"))
    active = faults.inject(drill, fault, host="lab")        # a mutating step behind gate "fault"
    ...
    drill.step("Heal the partition", active.heal, mutating=True)   # or leave it to the cleanup

A ``Fault`` says what it would do (``plan``), why it cannot apply on a host (``check``: not root,
a tool missing, a target that is not there), how to act (``inject``) and how to undo it (``heal``,
safe to call twice and before ``inject``). Every command goes through the host's shell
(``drill.shell``: local or SSH), so a fault works on a remote host as on the lab.

``inject`` is the only way in: under dry-run it prints the plan and touches nothing; otherwise it
records a fault that cannot apply as *not applicable* (never passed), registers the heal as a
cleanup *before* acting (an interrupt, a failed step or the kernel's exit still heals), then runs
the fault as a mutating step behind its gate.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from ..errors import DrillbookError
from ..shells.base import Shell

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


class FaultError(DrillbookError):
    """A fault could not be injected or healed as planned."""

    exit_code = 1


class Fault(Protocol):
    """What every fault does. ``title`` names its step; ``heal`` is idempotent."""

    title: str

    def plan(self) -> str: ...

    def check(self, shell: Shell) -> str | None: ...

    def inject(self, shell: Shell) -> str: ...

    def heal(self, shell: Shell) -> str: ...


class Active:
    """A fault on its host: injected once, healed at most once for real (by a stop condition, a
    step or the cleanup, whichever comes first; from any thread)."""

    def __init__(self, fault: Fault, shell: Shell) -> None:
        self.fault, self.shell = fault, shell
        self.injected = False
        self.healed = False
        self._lock = threading.Lock()

    def inject(self) -> str:
        with self._lock:
            self.injected = True  # before acting: a fault that half-happened must still be healed
            return self.fault.inject(self.shell)

    def heal(self) -> str:
        with self._lock:
            if self.healed:
                return "already healed"
            if not self.injected:
                self.healed = True
                return "nothing to heal: the fault was never injected"
            detail = self.fault.heal(self.shell)
            self.healed = True
            return detail


def inject(drill: Drill, fault: Fault, *, host: str, gate: str | None = "fault") -> Active | None:
    """Inject ``fault`` on ``host`` as a gated, mutating step of ``drill`` (see the module's docstring).

    Returns the active fault, or None under dry-run or when the fault does not apply here."""
    if drill.dry_run:
        drill.step(fault.title, lambda: None, mutating=True, gate=gate, plan=fault.plan())
        return None
    shell: Shell = drill.shell(host)
    reason = fault.check(shell)
    if reason:
        drill.not_applicable(fault.title, f"{reason} (on host {host})")
        return None
    active = Active(fault, shell)
    drill.cleanup(active.heal, f"heal: {fault.title}")  # first: whatever happens next, the fault is undone
    drill.step(fault.title, active.inject, mutating=True, gate=gate, plan=fault.plan())
    return active


def is_root(shell: Shell) -> bool:
    """Does the shell run commands as root on its host?"""
    done = shell.run("id -u", timeout=15)
    return done.ok and done.stdout.strip() == "0"


def missing_tool(shell: Shell, tool: str) -> bool:
    return not shell.run(f"command -v {tool} >/dev/null 2>&1", timeout=15).ok


def needs(shell: Shell, tools: tuple[str, ...], root: bool, why: str) -> str | None:
    """Why a fault cannot apply: a tool missing on the host, or root needed and not given."""
    for tool in tools:
        if missing_tool(shell, tool):
            return f"{tool} is not installed on {shell.name}"
    if root and not is_root(shell):
        return f"{why} needs root on {shell.name}, and its shell does not run as root"
    return None
