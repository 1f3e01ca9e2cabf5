"""The incident view of the runbooks: the index grouped by severity and by symptom, and on each
runbook's page the last drill that exercised it, with its result.

A drill exercised a runbook when it ran it as a sub-notebook (its bundle attaches the executed copy).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .. import paths
from ..config import catalog
from .data import RunSummary
from .md import badge, code, esc, link, table, when
from .paths import runbook_page, run_page

RESPONSE = {"P0": "respond within 15 minutes", "P1": "respond within 1 hour", "P2": "respond within 4 hours",
            "P3": "respond within 24 hours"}


def last_drill(name: str, runs: Sequence[RunSummary]) -> RunSummary | None:
    """The newest drill run (ledger order) that ran runbook ``name``."""
    return next((r for r in reversed(runs) if r.kind == "drill" and name in r.runbooks), None)


def last_drill_section(entry: catalog.Entry, runs: Sequence[RunSummary], pages: set[str]) -> str:
    page = runbook_page(entry.name)
    found = last_drill(entry.name, runs)
    if found is None:
        return "## Last drill\n\nNo drill in the archive has exercised this runbook yet.\n"
    evidence = link("record", page, run_page(found.run_id)) if found.run_id in pages else "not published"
    row = [link(found.drill, page, runbook_page(found.drill)), esc(found.env), badge(found.status, found.dry_run),
           when(found.finished_at), evidence]
    return "## Last drill\n\n" + table(["Drill", "Environment", "Result", "Finished", "Evidence"], [row])


def _row(entry: catalog.Entry, page: str) -> list[str]:
    meta = entry.meta
    return [link(meta.title, page, runbook_page(entry.name)), code(entry.name), code(meta.alert) if meta.alert else "",
            esc(meta.symptom), esc(meta.owner)]


def incident_index(entries: Sequence[catalog.Entry], page: str) -> str:
    """``## Runbooks by severity`` (P0 first, then no severity) and ``## Runbooks by symptom``."""
    runbooks = [e for e in entries if e.kind == "runbook"]
    if not runbooks:
        return ""
    out = ["## Runbooks by severity\n"]
    for severity in (*RESPONSE, None):
        group = sorted((e for e in runbooks if e.meta.severity == severity), key=lambda e: e.name)
        if group:
            heading = f"{severity}: {RESPONSE[severity]}" if severity else "No severity (drillbook lint reports these)"
            out.append(f"### {heading}\n")
            out.append(table(["Title", "Name", "Alert", "Symptom", "Owner"], [_row(e, page) for e in group]))
    out.append("## Runbooks by symptom\n")
    rows = [[esc(e.meta.symptom or "(none given)"), code(e.meta.alert) if e.meta.alert else "",
             esc(e.meta.severity or ""), link(e.meta.title, page, runbook_page(e.name))]
            for e in sorted(runbooks, key=lambda e: (e.meta.symptom.lower(), e.name))]
    out.append(table(["Symptom", "Alert", "Severity", "Runbook"], rows))
    return "\n".join(out)


def alerts_table(entries: Sequence[catalog.Entry]) -> str:
    """Alert → runbook, as docs/operations/incident-response.md shows it (severity first, then alert)."""
    order = {s: i for i, s in enumerate(RESPONSE)}
    runbooks = sorted((e for e in entries if e.kind == "runbook" and e.meta.alert),
                      key=lambda e: (order.get(e.meta.severity or "", 9), e.meta.alert))
    # Names, not links: a project's site may not publish every runbook this page names.
    rows = [f"| `{e.meta.alert}` | {e.meta.severity or 'none'} | {e.meta.symptom} | `{e.name}` | {e.meta.owner} |"
            for e in runbooks]
    return "\n".join(["| Alert | Severity | Symptom | Runbook | Paged |", "|---|---|---|---|---|", *rows])


ALERTS_DOC = "docs/operations/incident-response.md"
ALERTS_BLOCK = re.compile(r"(<!-- alerts:[^>]*-->\n)(.*?)(\n<!-- /alerts -->)", re.S)


def refresh_alerts_table(project: Path | None = None) -> bool:
    """Rewrite the alert table of ``docs/operations/incident-response.md`` from the runbooks' metadata;
    True when it changed. (``python -c "from drillbook.site.runbook_index import refresh_alerts_table;
    refresh_alerts_table()"`` after changing a runbook's alert, severity, symptom or owner.)"""
    root = project or paths.project_root()
    doc = root / ALERTS_DOC
    text = doc.read_text(encoding="utf-8")
    table_text = alerts_table(catalog.load_catalog(root))
    updated = ALERTS_BLOCK.sub(lambda m: m.group(1) + table_text + m.group(3), text, count=1)
    if updated != text:
        doc.write_text(updated, encoding="utf-8")
    return updated != text
