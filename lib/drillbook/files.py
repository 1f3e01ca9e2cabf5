"""Files and processes, done once: an atomic write, an exclusive lock, a kill that tolerates a gone pid.

* ``write_atomic``  readers see the old file or the new one, never half of one, and a crash just
  after it returns cannot lose the new content (the file and its folder are fsynced);
* ``flocked``       an ``flock`` held for a ``with`` block (released by the kernel if we die);
* ``kill``          a signal to a pid (or its process group) that may already be gone.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically: a unique temporary file beside it (never a fixed
    name another writer, or a planted symbolic link, could hold), fsynced, renamed over the target,
    then the folder fsynced so the rename itself survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """``write_atomic`` of ``data`` as indented JSON (values JSON cannot hold are written as text)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=False, default=str) + "\n", mode)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a folder we may not open for reading: the rename is done, only not yet durable
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_flock(handle: IO[Any], shared: bool = False) -> bool:
    """Take the lock on an open file without waiting; False if someone else holds it."""
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unflock(handle: IO[Any]) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def flocked(path: Path, shared: bool = False) -> Iterator[IO[str]]:
    """Hold an ``flock`` on ``path`` (created if need be) for the block, waiting for it if need be."""
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            unflock(handle)


def kill(pid: int, sig: int, group: bool = False) -> bool:
    """Send ``sig`` to ``pid`` (to its process group with ``group``); False if there is no such
    process, or it is not ours (its pid reused by another user's process): nothing to stop then."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
