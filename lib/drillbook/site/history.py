"""History per drill: trend charts of measures against objectives, pass/fail over time, every run listed.

The page's table holds the latest ``RECENT_ROWS`` runs; every run of the archive is in the drill's
static all-runs table (``site.runs_table``), so the page costs the same to build at any archive size.
Only the runs chosen by ``site.data.full_page_runs`` link to a full evidence page, the others to
their run-time HTML.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from ..config import catalog
from .charts import (
    digest,
    latency_series,
    measure_series,
    outcome_points,
    render_latency,
    render_measures,
    render_outcomes,
)
from .data import Archive, Cache, RunSummary
from .files import PageTree
from .md import badge, code, esc, front_matter, link, rel, table, when
from .paths import DASHBOARD, HISTORY_INDEX, chart, history_page, run_html, run_page, runbook_page, runs_table
from .runs_table import runs_table_html
from .status import measures_cell

RECENT_ROWS = 50


def _chart(tree: PageTree, cache: Cache, rel_path: str, kind: str, data: object, draw: Callable[[], bytes]) -> None:
    """Draw a chart only when its data changed since the last build (drawing dominates build time)."""
    charts = cache.section("charts")
    fingerprint = digest(kind, data)
    if charts.get(rel_path) == fingerprint and tree.has(rel_path):
        tree.keep(rel_path)
        return
    tree.write(rel_path, draw())
    charts[rel_path] = fingerprint


def _charts(tree: PageTree, cache: Cache, name: str, runs: list[RunSummary]) -> bool:
    """Write the drill's charts; True when it has a measures chart (a latency chart when it measured latency)."""
    series = measure_series(runs)
    units = {m.name: m.unit for r in runs for m in r.objective_measures()}
    if series:
        _chart(tree, cache, chart(name, "measures"), "measures", [series, units],
               lambda: render_measures(series, units))
    points = outcome_points(runs)
    _chart(tree, cache, chart(name, "outcomes"), "outcomes", points, lambda: render_outcomes(points))
    latency = latency_series(runs)
    if latency:
        _chart(tree, cache, chart(name, "latency"), "latency", latency, lambda: render_latency(latency))
    return bool(series)


def _evidence_link(run: RunSummary, page: str, tree: PageTree) -> str:
    if tree.produced(run_page(run.run_id)):
        return link("record", page, run_page(run.run_id))
    if tree.produced(run_html(run.run_id)):
        return link("notebook", page, run_html(run.run_id))
    return "not published (see verify)"


def history_markdown(name: str, runs: list[RunSummary], archive: Archive, tree: PageTree,
                     entry: catalog.Entry | None, has_measures: bool) -> str:
    page = history_page(name)
    title = entry.meta.title if entry else runs[-1].title
    counts = Counter(r.status for r in runs)
    tally = ", ".join(f"{counts[s]} {s}" for s in ("passed", "failed", "error", "aborted") if counts[s])
    out = [front_matter("toc", title=f"History: {title}") + f"# History: {esc(title)}\n",
           f"{code(name)} · {len(runs)} run(s): {tally}."
           + (f" · {link('procedure', page, runbook_page(name))}" if entry else "")
           + (f" · controls: {esc(', '.join(entry.meta.controls))}" if entry and entry.meta.controls else "")
           + f" · {link('dashboard', page, DASHBOARD)}\n",
           "## Measured against objectives\n"]
    if has_measures:
        out.append(f"![{esc(title)}: measures against objectives]({rel(page, chart(name, 'measures'))})\n\n"
                   "Solid lines are measured values, dashed lines the environment's objective at run time; "
                   "a red × marks a missed objective.\n")
    else:
        out.append("No measure of this notebook is compared with an objective (`drill.measure(..., objective=...)`).\n")
    if tree.produced(chart(name, "latency")):
        out.append("## Latency\n")
        out.append(f"![{esc(title)}: probe and write latency]({rel(page, chart(name, 'latency'))})\n\n"
                   "p50, p95 and p99 of successful probes (connect + `SELECT 1`) and acknowledged writes, before, "
                   "during and after the fault, per real run: the service's performance baseline.\n")
    out.append("## Outcomes\n")
    out.append(f"![{esc(title)}: outcome of every run]({rel(page, chart(name, 'outcomes'))})\n")
    out.append("## Runs\n")
    shown = list(reversed(runs))[:RECENT_ROWS]
    out.append(f"The latest {len(shown)}, newest first; {link(f'all {len(runs)} runs', page, runs_table(name))} "
               "are in one table. Full evidence pages are kept for the latest runs; older runs link to the "
               "executed notebook rendered at run time.\n")
    rows = [[str(r.seq), when(r.finished_at), esc(r.env), badge(r.status, r.dry_run), esc(r.reason or ""),
             measures_cell(r), _evidence_link(r, page, tree),
             "✓" if archive.verify.run_ok(r.run_id) else "✗"]
            for r in shown]
    out.append(table(["#", "Finished", "Environment", "Status", "Reason", "Measured vs objective", "Evidence",
                      "Verified"], rows))
    return "\n".join(out)


def history_index(archive: Archive, entries: dict[str, catalog.Entry]) -> str:
    page = HISTORY_INDEX
    rows = []
    for name, runs in sorted(archive.by_name().items()):
        last = runs[-1]
        title = entries[name].meta.title if name in entries else last.title
        rows.append([link(title, page, history_page(name)) + f"<br>{code(name)}", esc(last.kind), str(len(runs)),
                     badge(last.status, last.dry_run), when(last.finished_at)])
    out = [front_matter("toc") + "# Drill history\n",
           "Every notebook that has run, with trend charts and every run it left in the archive.\n"]
    out.append(table(["Notebook", "Kind", "Runs", "Latest", "Finished"], rows) if rows else "No runs yet.\n")
    return "\n".join(out)


def write_history(tree: PageTree, archive: Archive, entries: dict[str, catalog.Entry], cache: Cache) -> None:
    """Write every drill's history page and charts (after the evidence pages, which they link to)."""
    for name, runs in archive.by_name().items():
        has_measures = _charts(tree, cache, name, runs)
        entry = entries.get(name)
        tree.write(runs_table(name), runs_table_html(name, entry.meta.title if entry else runs[-1].title, runs,
                                                     tree, archive))
        tree.write(history_page(name), history_markdown(name, runs, archive, tree, entry, has_measures))
    tree.write(HISTORY_INDEX, history_index(archive, entries))
