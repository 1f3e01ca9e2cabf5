"""``drillbook status``: the latest run per notebook × environment, as a pandas table.

Read from the ledger alone (one JSON line per run), so it stays fast on large archives;
``drillbook verify`` is what proves the ledger matches the bundles.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .archive import latest_runs

COLUMNS = ["drill", "env", "status", "dry_run", "finished", "age", "run_id", "kind"]
# What the table is made of: keys of ``ledger.RunFields``, so no record.json is opened.
FROM_LEDGER = ["drill", "env", "status", "dry_run", "finished_at", "run_id", "kind"]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def latest_table(archive: Path, drill: str | None = None, env: str | None = None,
                 status: str | None = None) -> pd.DataFrame:
    entries = latest_runs(archive) if archive.exists() else []
    frame = pd.DataFrame(entries, columns=FROM_LEDGER)
    frame["dry_run"] = frame["dry_run"].fillna(False).astype(bool)
    for column, wanted in (("drill", drill), ("env", env), ("status", status)):
        if wanted is not None:
            frame = frame[frame[column] == wanted]
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    finished = pd.to_datetime(frame["finished_at"], utc=True, format="ISO8601")
    now = datetime.now(timezone.utc)
    frame = frame.assign(
        finished=finished.dt.strftime("%Y-%m-%d %H:%M"),
        age=[_age((now - t).total_seconds()) for t in finished],
    )
    return frame.sort_values(["drill", "env"])[COLUMNS].reset_index(drop=True)
