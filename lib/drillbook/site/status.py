"""The dashboard (drill × environment) and the compliance matrix (control → drills → evidence).

When is a drill due? ``parameters/schedule.yaml`` says which drill runs where and when; when it
lists a drill, its entries alone decide (an environment it does not list runs that drill on
demand). A drill it does not list falls back to the cron in the notebook's metadata, for every
environment it has run on. A drill is *overdue* when its cron fired and no run, whatever its
status, followed within the entry's grace (``grace:``, default one hour; metadata crons have the
default): ``schedule.missed_firing``, the rule ``drillbook schedule`` applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..config import catalog, schedule
from ..errors import ConfigError
from ..evidence.freshness import LastDrill
from ..evidence import freeze
from .data import Archive, RunSummary
from .freshness import fresh_cell
from .md import admonition, age, badge, code, esc, flag, front_matter, link, number, table, when
from .paths import (
    COMPLIANCE,
    DASHBOARD,
    EVIDENCE_INDEX,
    HISTORY_INDEX,
    RUNBOOKS_INDEX,
    history_page,
    run_page,
    runbook_page,
)


@dataclass(frozen=True)
class Due:
    cron: str | None
    source: str | None  # "schedule.yaml" or "metadata"
    due_at: datetime | None  # next firing after the latest run (None: on demand, or never run)
    overdue: bool


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    env: str | None  # None: a scheduled drill that has never run anywhere
    latest: RunSummary | None
    latest_pass: RunSummary | None
    due: Due
    objectives: tuple[str, ...]  # objective names the notebook declares it measures


def due(cron_text: str | None, source: str | None, last: datetime | None, now: datetime,
        grace: timedelta = schedule.DEFAULT_GRACE) -> Due:
    if cron_text is None:
        return Due(None, None, None, False)
    try:
        cron = schedule.Cron.parse(cron_text)
        due_at = cron.next_after(last) if last else None
        overdue = schedule.missed_firing(cron, grace, last, now) is not None  # as `drillbook schedule` says
    except ConfigError:  # a bad cron is lint's to report; the dashboard shows it as on demand
        return Due(cron_text, source, None, False)
    return Due(cron_text, source, due_at, overdue)


def _cron_for(name: str, env: str | None, entries: dict[str, catalog.Entry],
              planned: dict[tuple[str, str], schedule.Entry], listed: set[str]) -> tuple[str | None, str | None]:
    if env is not None and (name, env) in planned:
        return planned[(name, env)].cron.text, "schedule.yaml"
    entry = entries.get(name)
    if name in listed or entry is None or entry.meta.schedule is None:
        return None, None
    return entry.meta.schedule, "metadata"


def dashboard_rows(entries: list[catalog.Entry], plan: list[schedule.Entry], archive: Archive,
                   now: datetime) -> list[Row]:
    by_name = {e.name: e for e in entries}
    planned = {(p.drill, p.env): p for p in plan}
    listed = {p.drill for p in plan}
    latest: dict[tuple[str, str], RunSummary] = {}
    passing: dict[tuple[str, str], RunSummary] = {}
    titles: dict[str, str] = {}
    for run in archive.runs:  # ledger order: later runs overwrite earlier ones
        latest[(run.drill, run.env)] = run
        titles[run.drill] = run.title
        if run.counts_as_evidence:
            passing[(run.drill, run.env)] = run
    pairs: set[tuple[str, str | None]] = set(latest) | set(planned)
    seen = {name for name, _ in pairs}
    pairs |= {(e.name, None) for e in entries if e.kind == "drill" and e.meta.schedule and e.name not in seen}
    rows = []
    for name, env in sorted(pairs, key=lambda p: (p[0], p[1] or "")):
        last = latest.get((name, env)) if env else None
        cron, source = _cron_for(name, env, by_name, planned, listed)
        entry = by_name.get(name)
        grace = planned[(name, env)].grace if env is not None and (name, env) in planned else schedule.DEFAULT_GRACE
        rows.append(Row(name, entry.meta.title if entry else titles.get(name, name), env, last,
                        passing.get((name, env)) if env else None,
                        due(cron, source, last.finished if last else None, now, grace),
                        tuple(entry.meta.objectives) if entry else ()))
    return rows


# --------------------------------------------------------------------------- cells
def _name_cell(row: Row, page: str, names_with_runs: set[str], catalogued: set[str]) -> str:
    if row.name in names_with_runs:
        return link(row.title, page, history_page(row.name)) + f"<br>{code(row.name)}"
    if row.name in catalogued:
        return link(row.title, page, runbook_page(row.name)) + f"<br>{code(row.name)}"
    return esc(row.title)


def _due_cell(d: Due, now: datetime) -> str:
    if d.cron is None:
        return "on demand"
    cron = f"<br>{code(d.cron)} ({esc(d.source)})"
    if d.due_at is None and d.overdue:
        return flag("never run", "overdue") + cron
    if d.due_at is None:
        return "on demand" + cron
    if d.overdue:
        return flag("overdue", "overdue") + f" since {when(d.due_at)}" + cron
    return f"{when(d.due_at)} ({age((now - d.due_at).total_seconds())})" + cron


def measures_cell(run: RunSummary | None, declared: tuple[str, ...] = ()) -> str:
    """Measured figures next to their objectives; declared objectives the run did not measure are named."""
    parts = []
    measured = set()
    for m in run.objective_measures() if run else []:
        measured.add(m.objective)
        if m.objective_value is None:
            parts.append(f"{esc(m.name)} {number(m.value)} {esc(m.unit)} (no objective set)")
            continue
        sign = "≤" if m.better == "lower" else "≥"
        icon = "✓" if m.verdict == "met" else "✗"
        parts.append(f"{esc(m.name)} {number(m.value)} {esc(m.unit)} {sign} {number(m.objective_value)} "
                     f"{flag(icon + ' ' + m.verdict, 'ok' if m.verdict == 'met' else 'overdue')}")
    for name in declared:
        if run is not None and name not in measured:
            target = run.objectives.get(name)
            parts.append(f"{esc(name)}: not measured" + (f" (objective {number(target)})" if target is not None else ""))
    return "<br>".join(parts)


def _record_link(run: RunSummary, page: str, pages: set[str]) -> str:
    return link("record", page, run_page(run.run_id)) if run.run_id in pages else "record not published"


def _evidence_cell(run: RunSummary | None, page: str, archive: Archive, pages: set[str]) -> str:
    if run is None:
        return ""
    mark = "✓ verified" if archive.verify.run_ok(run.run_id) else "✗ not verified"
    return _record_link(run, page, pages) + f"<br>{esc(mark)}"


# --------------------------------------------------------------------------- pages
def verify_banner(archive: Archive, page: str) -> str:
    v = archive.verify
    if not v.checked:
        return admonition("info", "No evidence yet", "There is no evidence archive yet: run a drill "
                          "(`drillbook run NAME --env ENV`), then publish again.")
    if v.ok:
        return admonition("success", "Evidence verified at build time",
                          f"`drillbook verify`: {v.runs} run(s); the ledger chain, every signature and every "
                          f"file hash are intact. {link('How to check it yourself', page, EVIDENCE_INDEX)}.")
    count = len(v.archive_problems) + sum(len(p) for p in v.run_problems.values())
    return admonition("failure", f"Verification found {count} problem(s)",
                      f"Runs marked ✗ below are not trustworthy. {link('Details', page, EVIDENCE_INDEX)}.")


def freeze_banners(root: Path) -> list[str]:
    """One red box per freeze in force (``drillbook freeze``): nothing is scheduled there meanwhile."""
    return [admonition("failure", f"Frozen: {'all environments' if f.scope == freeze.ALL else f.scope}",
                       f"{esc(f.describe())}. Drills there are interrupted and not started until "
                       f"`drillbook thaw`.") for f in freeze.active(root)]


def dashboard_page(rows: list[Row], archive: Archive, catalogued: set[str], pages: set[str], now: datetime,
                   first: str = "") -> str:
    """The dashboard; ``first`` (the open incidents) comes before everything else."""
    page = DASHBOARD
    names = {r.drill for r in archive.runs}
    overdue = [r for r in rows if r.due.overdue]
    out = [front_matter("toc") + "# Dashboard\n", *([first] if first else []),
           f"Latest run of every drill on every environment, as of **{when(now)}** (the time this site was "
           "built; publish again to refresh).\n", verify_banner(archive, page), *freeze_banners(archive.root)]
    if overdue:
        listing = "\n".join(f"- {esc(r.title)} on {esc(r.env or 'any environment')}" for r in overdue)
        out.append(admonition("warning", f"{len(overdue)} overdue", listing))
    body = [[_name_cell(r, page, names, catalogued), esc(r.env or "—"),
             badge(r.latest.status, r.latest.dry_run) if r.latest else badge("never run"),
             f"{when(r.latest.finished_at)}<br>{age((now - r.latest.finished).total_seconds())}"
             if r.latest and r.latest.finished else "",
             _due_cell(r.due, now), measures_cell(r.latest, r.objectives), _evidence_cell(r.latest, page, archive, pages)]
            for r in rows]
    if body:
        out.append(table(["Drill", "Environment", "Latest", "Ran", "Next due", "Measured vs objective", "Evidence"], body))
    else:
        out.append("Nothing is scheduled and nothing has run yet.\n")
    out.append(
        "**Reading this table.** *Next due* is the next firing of the drill's cron after its latest run "
        "(from `parameters/schedule.yaml` when it lists the drill, else from the notebook's metadata); "
        "**overdue** means the cron fired and no run followed within the entry's grace (`grace:`, default "
        "1 h), as `drillbook schedule` says. A dry run is shown but never counts as "
        "passing evidence. Measured figures are compared with the objective the environment set at run time.\n\n"
        f"See also: {link('compliance matrix', page, COMPLIANCE)} · {link('drill histories', page, HISTORY_INDEX)} · "
        f"{link('evidence and keys', page, EVIDENCE_INDEX)} · {link('runbooks', page, RUNBOOKS_INDEX)}\n")
    return "\n".join(out)


def compliance_page(entries: list[catalog.Entry], rows: list[Row], archive: Archive, pages: set[str],
                    fresh: dict[str, LastDrill] | None = None) -> str:
    page = COMPLIANCE
    by_drill: dict[str, list[Row]] = {}
    for row in rows:
        by_drill.setdefault(row.name, []).append(row)
    controls: dict[str, list[catalog.Entry]] = {}
    for entry in entries:
        for control in entry.meta.controls:
            controls.setdefault(control, []).append(entry)
    body, uncovered = [], []
    for control in sorted(controls):
        covered = False
        for entry in sorted(controls[control], key=lambda e: e.name):
            drill_rows = by_drill.get(entry.name, [])
            best = max((r.latest_pass for r in drill_rows if r.latest_pass), key=lambda r: r.seq, default=None)
            last = max((r.latest for r in drill_rows if r.latest), key=lambda r: r.seq, default=None)
            covered = covered or best is not None
            envs = ", ".join(sorted({r.env for r in drill_rows if r.env and r.latest}))
            evidence = (f"{when(best.finished_at)} on {esc(best.env)}<br>{_record_link(best, page, pages)}"
                        if best else flag("none", "overdue"))
            late = [r.env or "never run" for r in drill_rows if r.due.overdue]
            planned = any(r.due.cron for r in drill_rows)
            body.append([esc(control), link(entry.meta.title, page, runbook_page(entry.name)) + f"<br>{code(entry.name)}",
                         esc(entry.kind), esc(envs or "—"), evidence,
                         badge(last.status, last.dry_run) if last else badge("never run"),
                         flag("overdue: " + ", ".join(late), "overdue") if late
                         else esc("on schedule" if planned else "on demand"),
                         fresh_cell((fresh or {}).get(entry.name), page, pages)])
        if not covered:
            uncovered.append(control)
    out = [front_matter("toc") + "# Compliance matrix\n",
           "Each control named in a runbook's or drill's metadata (`metadata.drillbook.controls`), the notebooks "
           "that cover it, and the date of the latest **passing, non-dry-run** evidence.\n",
           verify_banner(archive, page)]
    if uncovered:
        out.append(admonition("warning", f"{len(uncovered)} control(s) without passing evidence",
                              "\n".join(f"- {esc(c)}" for c in uncovered)))
    if body:
        out.append(table(["Control", "Covered by", "Kind", "Environments", "Latest passing evidence",
                          "Latest run", "Schedule", "Runbook's last drill"], body))
    else:
        out.append("No notebook names a control yet: add `controls` to `metadata.drillbook`.\n")
    return "\n".join(out)
