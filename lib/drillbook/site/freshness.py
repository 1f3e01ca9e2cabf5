"""Runbook freshness on the site: the last passing drill that exercised a runbook, and the
"changed since last drill" flag (``evidence/freshness.py``), on its page and in the compliance matrix."""
from __future__ import annotations

from ..evidence.freshness import LastDrill
from .md import code, esc, flag, link, when
from .paths import run_page


def _run(d: LastDrill, page: str, pages: set[str]) -> str:
    label = f"{esc(d.drill)} on {esc(d.env)}"
    return link(label, page, run_page(str(d.run_id))) if d.run_id in pages else f"{label} ({code(d.run_id)})"


def fresh_cell(d: LastDrill | None, page: str, pages: set[str]) -> str:
    """One table cell: the last drill, its date and measured RTO, and the flag."""
    if d is None:
        return "—"
    if d.run_id is None:
        return flag("never drilled", "overdue")
    rto = f", RTO {d.rto_seconds:g} s" if d.rto_seconds is not None else ""
    mark = "<br>" + flag("changed since last drill", "overdue") if d.changed else ""
    return f"{when(d.finished_at)}{rto}<br>{_run(d, page, pages)}{mark}"


def fresh_section(d: LastDrill, page: str, pages: set[str]) -> str:
    """The runbook page's section."""
    out = ["## Last drill\n"]
    if d.run_id is None:
        out.append(flag("never drilled", "overdue") + " No passing drill has exercised this runbook yet.\n")
        return "\n".join(out)
    rto = f"; measured RTO **{d.rto_seconds:g} s**" if d.rto_seconds is not None else ""
    out.append(f"Last exercised by {_run(d, page, pages)}, which passed at **{when(d.finished_at)}**{rto}.\n")
    if d.changed:
        out.append(flag("changed since last drill", "overdue") + " The runbook's cells differ from the copy that "
                   "drill executed: drill it again before relying on it (`drillbook status --stale`).\n")
    else:
        out.append("Unchanged since that drill.\n")
    return "\n".join(out)
