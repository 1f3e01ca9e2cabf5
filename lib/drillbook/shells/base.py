"""Where a command runs: one interface, local (subprocess) or remote (SSH, see ``ssh.py``).

    sh = drill.shell("db1")            # from the environment's hosts
    result = sh.run("df -P /")         # Result(exit_code, stdout, stderr, seconds)
    sh.run(["pg_ctl", "promote", "-D", data], check=True)

Output is redacted of the run's secrets before it is returned, so it can be printed freely.
"""
from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .errors import DrillbookError, NotFound
from .secrets import Redactor


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
    return command if isinstance(command, str) else shlex.join(command)


class Shell(Protocol):
    name: str

    def run(self, command: str | Sequence[str], *, timeout: float = 60.0, check: bool = False,
            input: str | None = None) -> Result: ...

    def close(self) -> None: ...


class LocalShell:
    """Runs commands here, with ``subprocess``. A string goes through ``sh -c``; a list does not."""

    def __init__(self, name: str = "local", redactor: Redactor | None = None) -> None:
        self.name = name
        self.redactor = redactor or Redactor()

    def run(self, command: str | Sequence[str], *, timeout: float = 60.0, check: bool = False,
            input: str | None = None) -> Result:
        text = command_text(command)
        t0 = time.monotonic()
        try:
            done = subprocess.run(command, shell=isinstance(command, str), capture_output=True, text=True,
                                  timeout=timeout, input=input)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = 124, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {timeout:g} s"
        except FileNotFoundError as exc:
            code, stdout, stderr = 127, "", f"{exc.filename}: command not found"
        scrub = self.redactor.scrub
        result = Result(scrub(text), code, scrub(stdout), scrub(stderr), round(time.monotonic() - t0, 3))
        return result.check() if check else result

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def open_shell(env: Any, host: str, secret: Callable[[str], str], redactor: Redactor, project: Path) -> Shell:
    """The shell for ``host`` of environment ``env``; ``secret`` resolves the host's key reference."""
    if host not in env.hosts:
        known = ", ".join(env.hosts) or "none"
        raise NotFound(f"environment {env.name!r} has no host {host!r}", f"known hosts: {known}")
    spec = env.hosts[host]
    if spec.shell == "local":
        return LocalShell(host, redactor)
    from .ssh import SSHShell

    return SSHShell.from_host(host, spec, secret, redactor, project)
