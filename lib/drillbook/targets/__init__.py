"""Targets: helpers for the real systems a drill acts on.

* ``host``      steady-state facts about a host (reachable, disk, load), through its shell
* ``postgres``  a PostgreSQL primary + standbys: roles, fence, promote, lag, rebuild, backup,
                restore, checksums, credential and certificate rotation

This module also holds the one helper they share: publishing a new value of a ``file:`` secret.
"""
from __future__ import annotations

from pathlib import Path

from ..config.secrets import SecretRef
from ..errors import SecretError
from ..files import write_atomic


def write_file_secret(ref: str, value: str, project: Path) -> Path:
    """Replace the value of a ``file:`` secret atomically (0600), e.g. after a rotation.

    Readers see the old value or the new one, never half a file. ``env:`` secrets live in
    someone else's process environment and cannot be published from here.
    """
    parsed = SecretRef.parse(ref)
    if parsed.scheme != "file":
        raise SecretError(
            f"cannot store a new value in secret {parsed}: only file: secrets can be written",
            f"set {parsed.target} to the new value where drillbook runs, or use a file: reference",
        )
    path = parsed.path(project)
    write_atomic(path, value + "\n")
    return path
