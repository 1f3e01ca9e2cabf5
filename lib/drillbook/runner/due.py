"""``drillbook run --due`` on one machine: which entries to run now, and never one twice at once.

    claim()         an exclusive, non-blocking ``flock`` per schedule entry for as long as a
                    ``--due`` invocation works on it; a second invocation skips the entry
    due_now()       the one "is it due" rule, asked again under the claim from the ledger as it is
                    now (another invocation may have just finished the entry)
    first_time()    remembers, per entry, what was already said about which firing (a skip for a
                    freeze, an overdue notification), so a cron calling every few minutes says it once

Overdue entries and skips are the schedule's business, not the runner's: this module only
answers questions; ``cli/run.py`` acts.
"""
from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from .. import files
from ..config.schedule import Entry, is_due
from ..evidence.archive import latest_runs
from ..journal import parse_iso

__all__ = ["claim", "due_now", "first_time", "last_finished", "latest_entries", "parse_iso"]


def _file_name(entry: Entry) -> str:
    """A safe file name for the entry (a drill's name in schedule.yaml is not trusted as a path)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", entry.key)[:60]
    return f"{slug}-{hashlib.sha256(entry.key.encode()).hexdigest()[:12]}"


@contextmanager
def claim(state: Path, entry: Entry) -> Iterator[bool]:
    """Hold the entry's claim (True), or yield False at once when another invocation holds it.
    The kernel drops the lock when the holder dies, so a killed invocation never blocks one."""
    directory = state / "locks" / "schedule"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{_file_name(entry)}.lock", "a+", encoding="utf-8") as handle:
        if not files.try_flock(handle):
            yield False
            return
        try:
            yield True
        finally:
            files.unflock(handle)


def latest_entries(archive: Path) -> list[dict[str, Any]]:
    """The newest real (not dry) run of each (drill, env): their ledger entries."""
    return latest_runs(archive, dry_runs=False) if archive.exists() else []


def last_finished(archive: Path) -> dict[tuple[str, str], datetime]:
    """The latest finish of each (drill, env) from the ledger; dry runs do not count."""
    return {(e["drill"], e["env"]): parse_iso(e["finished_at"]) for e in latest_entries(archive)}


def due_now(entry: Entry, archive: Path, now: datetime) -> bool:
    return is_due(entry.cron, last_finished(archive).get((entry.drill, entry.env)), now)


def first_time(state: Path, entry: Entry, what: str, firing: datetime) -> bool:
    """True the first time this is asked for ``what`` about ``firing`` of ``entry``; remembered in
    ``<state>/schedule/``, under the entry's claim (callers hold it)."""
    path = state / "schedule" / f"{_file_name(entry)}.json"
    try:
        said = json.loads(path.read_text(encoding="utf-8"))
        said = said if isinstance(said, dict) else {}
    except (OSError, ValueError):
        said = {}
    if said.get(what) == firing.isoformat():
        return False
    said[what] = firing.isoformat()
    files.write_json_atomic(path, said)
    return True
