"""``LocalShell``: the shell interface of ``base.py`` on this machine, with ``subprocess``."""
from __future__ import annotations

import subprocess
import time
from typing import Sequence

from ..config.secrets import Redactor
from .base import Result, command_text


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


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
