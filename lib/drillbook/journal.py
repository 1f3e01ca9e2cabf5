"""The journal: what a run did, written by the kernel as it goes and read by the runner.

It lives in the run's private directory (``$DRILLBOOK_RUN_DIR/journal.json``) and is rewritten
atomically after every event, so a kernel that dies mid-run still leaves what it had done.
The runner copies it into ``record.json``.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import files

RUN_DIR_VAR = "DRILLBOOK_RUN_DIR"  # the run's private folder, set by the runner for the kernel
JOURNAL_NAME = "journal.json"
STATUSES = ("passed", "failed", "error", "aborted")  # the closed set of run statuses
# References (never values) of the secrets the kernel resolved: the runner resolves them again to scrub.
SECRET_REFS = "secret_refs"


# Where the operator's name comes from, in order: the JupyterHub user (the person logged in to
# the hub; the server's OS user is a service account), an explicit name, else the OS login.
OPERATOR_SOURCES = ("JUPYTERHUB_USER", "DRILLBOOK_OPERATOR")
OS_USER = "os-user"


def operator_identity() -> tuple[str, str]:
    """Who runs this (``name@host``) and which source named them (``OPERATOR_SOURCES`` or ``OS_USER``)."""
    for variable in OPERATOR_SOURCES:
        name = " ".join(os.environ.get(variable, "").split())[:128]
        if name:
            return f"{name}@{socket.gethostname()}", variable
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name}@{socket.gethostname()}", OS_USER


def operator_name() -> str:
    """Who runs this and on which host (see ``operator_identity``)."""
    return operator_identity()[0]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON so that readers see either the old or the new file, never half of one."""
    files.write_json_atomic(path, data, mode)


def read_journal(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / JOURNAL_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def secret_refs(kernel_journal: dict[str, Any] | None) -> list[str]:
    """The secret references a kernel journalled (see ``SECRET_REFS``); junk is ignored."""
    found = (kernel_journal or {}).get(SECRET_REFS)
    return [r for r in found if isinstance(r, str)] if isinstance(found, list) else []
