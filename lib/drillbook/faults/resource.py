"""Resource faults: CPU and memory pressure with ``stress-ng``, for a bounded time.

    faults.inject(drill, resource.Stress(cpu=2, vm_bytes=256 << 20, seconds=20), host="lab")

stress-ng runs in the background on the host with its own ``--timeout`` (it stops by itself even
if nothing heals it); its pid is kept in a file of our own so the heal stops it at once.
"""
from __future__ import annotations

import re
import shlex

from ..shells.base import Shell
from .base import FaultError, missing_tool

MAX_SECONDS = 3600


class Stress:
    """``cpu`` busy workers and ``vm`` workers touching ``vm_bytes`` each, for ``seconds`` at most."""

    def __init__(self, cpu: int = 1, vm: int = 0, vm_bytes: int = 64 << 20, seconds: float = 30.0,
                 tag: str = "drill", title: str | None = None) -> None:
        if not (0 <= cpu <= 256 and 0 <= vm <= 64 and (cpu or vm)):
            raise ValueError("stress needs 1-256 cpu workers or 1-64 vm workers")
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SECONDS}]: the pressure is always bounded")
        if not re.match(r"^[A-Za-z0-9_-]{1,40}$", tag):
            raise ValueError(f"{tag!r} cannot be part of a file name")
        self.cpu, self.vm, self.vm_bytes, self.seconds = cpu, vm, vm_bytes, seconds
        self.pidfile = f"/tmp/drillbook-stress-{tag}.pid"
        self.title = title or f"CPU and memory pressure ({cpu} cpu, {vm} vm workers) for {seconds:g} s"

    def argv(self) -> list[str]:
        args = ["stress-ng", "--timeout", f"{int(max(1, round(self.seconds)))}s", "--quiet"]
        if self.cpu:
            args += ["--cpu", str(self.cpu)]
        if self.vm:
            args += ["--vm", str(self.vm), "--vm-bytes", str(self.vm_bytes)]
        return args

    def plan(self) -> str:
        return f"run {' '.join(self.argv())} in the background; heal: stop it (it stops by itself after {self.seconds:g} s)"

    def check(self, shell: Shell) -> str | None:
        return f"stress-ng is not installed on {shell.name}" if missing_tool(shell, "stress-ng") else None

    def inject(self, shell: Shell) -> str:
        command = (f"nohup setsid {shlex.join(self.argv())} >/dev/null 2>&1 </dev/null & "
                   f"echo $! > {shlex.quote(self.pidfile)}; cat {shlex.quote(self.pidfile)}")
        pid = shell.run(command, timeout=30, check=True).stdout.strip()
        if not pid.isdigit():
            raise FaultError(f"stress-ng did not start on {shell.name}")
        return f"stress-ng running as pid {pid}"

    def heal(self, shell: Shell) -> str:
        f = shlex.quote(self.pidfile)
        # stress-ng's workers are its children in its own session: signal the whole group.
        done = shell.run(f"test -f {f} || exit 3; pid=$(cat {f}); rm -f {f}; "
                         f"kill -TERM -- -\"$pid\" 2>/dev/null || kill -TERM \"$pid\" 2>/dev/null; "
                         f"i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
                         f"kill -KILL -- -\"$pid\" 2>/dev/null; echo \"$pid\"", timeout=30)
        if done.exit_code == 3:
            return "stress-ng was not running"
        return f"stress-ng (pid {done.stdout.strip()}) stopped"
