"""One run per environment at a time: an exclusive ``flock`` on ``<state>/locks/<env>.lock``.

The kernel releases the lock when the holder dies, even by SIGKILL, so a crashed runner
never leaves an environment locked. The file names the current holder for the error message.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config.environments import validate_environment_name
from ..errors import LockBusy
from ..files import try_flock, unflock


@contextmanager
def hold(state: Path, env: str, run_id: str, wait: float = 0.0, hint: str | None = None,
         operator: str | None = None) -> Iterator[None]:
    """Hold the environment's lock (waiting up to ``wait`` seconds); ``hint`` replaces LockBusy's default.
    ``operator`` is who holds it, for the message a second run gets."""
    directory = state / "locks"
    path = directory / f"{validate_environment_name(env)}.lock"  # a name, never a path out of locks/
    directory.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + max(0.0, wait)
        while not try_flock(handle):
            if time.monotonic() >= deadline:
                raise LockBusy(f"environment {env!r} is busy: {_holder(path)}", hint) from None
            time.sleep(0.2)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "since": time.time(), "operator": operator}))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            unflock(handle)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        who = f", run by {info['operator']}" if info.get("operator") else ""
        return f"run {info['run_id']} (pid {info['pid']}) holds it since {since}{who}"
    except (OSError, ValueError, KeyError):
        return "another run holds it"
