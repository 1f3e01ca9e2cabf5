"""``record.json``: what an auditor reads first. Built from the run plan, the journal and the outcome.

Fields: drill, env, status (passed|failed|error|aborted) and reason; parameters (secret
values never appear: the runner scrubs the whole record); steps, checks, measures next to the
environment's objectives, cleanups, gates; operator, host, versions; the notebook's sha256
and git commit.
"""
from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from . import journal

SCHEMA = 1
VERSIONED = ("drillbook", "papermill", "nbclient", "nbconvert", "ipykernel")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_info(path: Path, project: Path) -> dict[str, Any]:
    """The notebook as it was run: its path in the project (or file name, if outside it),
    sha256 of the file, and the git commit (dirty or not)."""
    try:
        shown = str(path.resolve().relative_to(project.resolve()))
    except ValueError:
        shown = path.name  # evidence names no machine paths
    info: dict[str, Any] = {"path": shown, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "git_commit": None, "git_dirty": None}
    commit = _git(["rev-parse", "HEAD"], path.parent)
    if commit:
        info["git_commit"] = commit
        status = _git(["status", "--porcelain", "--", path.name], path.parent)
        info["git_dirty"] = bool(status)
    return info


def base_record(*, run_id: str, drill: str, kind: str, title: str, notebook: str, env: Any,
                parameters: dict[str, Any], dry_run: bool, approve: list[str], change: str | None,
                controls: list[str], source: dict[str, Any], operator: str) -> dict[str, Any]:
    """The part of the record known before the kernel starts (also kept in the in-flight marker)."""
    return {
        "schema": SCHEMA, "run_id": run_id, "drill": drill, "kind": kind, "title": title,
        "notebook": notebook, "env": env.name, "production": env.production,
        "status": "running", "reason": None, "started_at": journal.now_iso(), "finished_at": None,
        "seconds": None, "dry_run": dry_run, "approve": approve, "change": change,
        "parameters": parameters, "objectives": dict(env.objectives), "controls": controls,
        "operator": operator, "host": socket.gethostname(), "versions": versions(), "source": source,
        "steps": [], "checks": [], "measures": [], "cleanups": [], "gates": [], "attachments": [],
        "failing_cell": None, "results": None,
    }


JOURNAL_FIELDS = ("steps", "checks", "measures", "cleanups", "gates", "attachments", "error", "note")


def complete_record(record: dict[str, Any], *, status: str, reason: str | None, seconds: float,
                    kernel_journal: dict[str, Any] | None, failing_cell: dict[str, Any] | None,
                    results: dict[str, Any] | None) -> dict[str, Any]:
    done = dict(record)
    if kernel_journal:
        for key in JOURNAL_FIELDS:
            if key in kernel_journal:
                done[key] = kernel_journal[key]
        done["operator"] = kernel_journal.get("operator") or done["operator"]
    done.update(status=status, reason=reason, finished_at=journal.now_iso(), seconds=round(seconds, 3),
                failing_cell=failing_cell, results=results)
    return done
