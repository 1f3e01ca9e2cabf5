"""Runbook freshness: the last passing drill that exercised each runbook, and whether the runbook
changed since.

A drill exercises a runbook by running it as a child (``Drill.run_notebook``): the executed copy is
archived as ``attachments/<runbook>.ipynb`` in the drill's bundle. A passing, real run of the runbook
itself exercises it too (its ``notebook.ipynb``). "Changed since last drill" compares the cells of the
runbook now (type and source) with those of that executed copy; papermill's injected-parameters
cell and every output and metadata are left out, so only an edit of the procedure counts.

Read from the ledger (newest first) and, per runbook, the one bundle that answers: fast on a large
archive. ``drillbook status --stale`` and the site's runbook pages and compliance matrix use it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EvidenceError
from . import ledger
from .archive import load_record, run_dir

INJECTED = "injected-parameters"


@dataclass(frozen=True)
class LastDrill:
    runbook: str
    run_id: str | None  # None: no passing drill ever exercised it
    drill: str | None
    env: str | None
    finished_at: str | None
    rto_seconds: float | None
    changed: bool

    @property
    def stale(self) -> bool:
        return self.run_id is None or self.changed

    def reason(self) -> str:
        if self.run_id is None:
            return "never exercised by a passing drill"
        return "changed since last drill" if self.changed else "unchanged since last drill"


def cells_sha256(notebook: dict[str, Any]) -> str:
    """The procedure a notebook holds: each cell's type and source, without papermill's parameters cell."""
    cells = []
    for cell in notebook.get("cells") or []:
        if INJECTED in ((cell.get("metadata") or {}).get("tags") or []):
            continue
        source = cell.get("source") or ""
        cells.append([cell.get("cell_type"), "".join(source) if isinstance(source, list) else str(source)])
    return hashlib.sha256(json.dumps(cells, ensure_ascii=True).encode("ascii")).hexdigest()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rto(archive: Path, run_id: str) -> float | None:
    try:
        measures = load_record(archive, run_id).get("measures") or []
    except EvidenceError:  # an unreadable record is verify's to report; freshness shows no RTO
        return None
    found = [m.get("value") for m in measures if m.get("name") == "rto_seconds" or m.get("objective") == "rto_seconds"]
    return float(found[-1]) if found and isinstance(found[-1], (int, float)) else None


def last_drills(archive: Path, runbooks: dict[str, Path]) -> dict[str, LastDrill]:
    """For each runbook (name → its notebook file), its last passing exercise and whether it changed since."""
    passing = [e for e in ledger.read_entries(archive) if "run_id" in e and e.get("status") == "passed"
               and not e.get("dry_run")] if archive.exists() else []
    found: dict[str, LastDrill] = {}
    for name, source in runbooks.items():
        current = _read(source)
        found[name] = LastDrill(name, None, None, None, None, None, False)
        for entry in reversed(passing):
            bundle = run_dir(archive, str(entry["run_id"]))
            copy = bundle / ("notebook.ipynb" if entry.get("drill") == name else f"attachments/{name}.ipynb")
            if not copy.is_file():
                continue
            exercised = _read(copy)
            changed = current is None or exercised is None or cells_sha256(current) != cells_sha256(exercised)
            found[name] = LastDrill(name, str(entry["run_id"]), entry.get("drill"), entry.get("env"),
                                    entry.get("finished_at"), _rto(archive, str(entry["run_id"])), changed)
            break
    return found
