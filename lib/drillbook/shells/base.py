"""Where a command runs: one interface (``Shell``), local (``local.py``, subprocess) or remote (``ssh.py``).

    sh = drill.shell("db1")            # from the environment's hosts
    result = sh.run("df -P /")         # Result(exit_code, stdout, stderr, seconds)
    sh.run(["pg_ctl", "promote", "-D", data], check=True)

Output is redacted of the run's secrets before it is returned, so it can be printed freely.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Protocol, Sequence

from ..errors import DrillbookError


class CommandFailed(DrillbookError):
    """A command exited non-zero where success was required."""

    exit_code = 1


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> Result:
        if not self.ok:
            detail = (self.stderr or self.stdout).strip().splitlines()
            raise CommandFailed(
                f"command failed (exit {self.exit_code}): {self.command}" + (f": {detail[-1]}" if detail else ""),
                "read the step's output above; fix the cause, then re-run the step",
            )
        return self


def command_text(command: str | Sequence[str]) -> str:
    """The command as one line of shell: a list is quoted, a string is taken as written."""
    return command if isinstance(command, str) else shlex.join(command)


class Shell(Protocol):
    """What every shell does: run a command (redacted ``Result``), and close."""

    name: str

    def run(self, command: str | Sequence[str], *, timeout: float = 60.0, check: bool = False,
            input: str | None = None) -> Result: ...

    def close(self) -> None: ...
