"""The incidents page: every incident id the records name, with the timeline of the runs that served it.

An incident's runs are those whose record carries its ``incident`` id (``drillbook run … --incident``,
``drillbook incident open``, or a run that resumes one of them). Per incident the page shows:

* the timeline, from the records' journals: who started which run and how (mode, LIVE or dry run),
  each gate approved, each step and check, each run's end; skipped steps name the run they completed in;
* time to first action (the incident's first run starting → the first mutating step that really ran)
  and time to resolution (→ the end of the first real run that passed), each against the severity's
  response target: P0 15 min, P1 1 h, P2 4 h, P3 24 h, or the environment's ``response_targets``
  (minutes, per severity); the most severe severity any of its runs names counts;
* links to each run's evidence page.

An incident is **open** while none of its real runs passed; the dashboard lists open incidents first.
What a record holds is text from a notebook or an operator: everything is escaped. Each run's part is
cached like the run summaries (by run id and MANIFEST hash), so a rebuild reads only new records.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import environments, runbook_rules
from ..incidentfile import INCIDENT_ID
from ..errors import DrillbookError, EvidenceError
from ..evidence.archive import load_record
from ..evidence.record import SEVERITIES, Record
from .data import Archive, Cache
from .md import admonition, badge, esc, front_matter, link, parse_time, rel, slug, table, when
from .paths import DASHBOARD, INCIDENTS, run_html, run_page

RESPONSE_TARGETS = {name: seconds / 60 for name, seconds in runbook_rules.SEVERITIES.items()}  # minutes
MAX_EVENTS = 200  # per run: a runaway notebook must not make the page unreadable
RECENT_INCIDENTS = 20  # resolved incidents whose runs keep a full evidence page


@dataclass
class Incident:
    id: str
    runs: list[dict[str, Any]]  # the runs' cached parts, oldest first
    severity: str | None
    target_minutes: float
    opened: datetime | None
    first_action: datetime | None
    resolved: datetime | None

    @property
    def open(self) -> bool:
        return self.resolved is None


def _events(rec: Record) -> list[list[str]]:
    """(when, who, what) of everything a run's record says happened, in time order."""
    who = str(rec.get("operator") or "?")
    mode = "in a notebook" if rec.get("mode") == "interactive" else "with drillbook run"
    live = "dry run" if rec.get("dry_run") else "LIVE"
    resumes = f", resuming run {rec['resumes']}" if rec.get("resumes") else ""
    found = [[str(rec.get("started_at") or ""), who, f"started run {rec.get('run_id')} of {rec.get('drill')} on "
              f"{rec.get('env')} {mode} ({live}{resumes})"]]
    for gate in rec.get("gates") or []:
        how = gate.get("method") or "approve"
        found.append([str(gate.get("at") or ""), who, f"approved gate {gate.get('gate')} ({how})"])
    for step in rec.get("steps") or []:
        kind = "mutating step" if step.get("mutating") else "step"
        why = f" — {step['detail']}" if step.get("status") in ("failed", "skipped") and step.get("detail") else ""
        found.append([str(step.get("started_at") or ""), who, f"{kind} {step.get('title')}: {step.get('status')}{why}"])
    for check in rec.get("checks") or []:
        verdict = "passed" if check.get("passed") else "failed"
        found.append([str(check.get("at") or ""), who, f"check {check.get('name')}: {verdict}"])
    found.append([str(rec.get("finished_at") or ""), who, f"run ended {rec.get('status')}"
                  + (f": {rec['reason']}" if rec.get("reason") else "")])
    return sorted(found[:MAX_EVENTS], key=lambda e: e[0])


def _first_action(rec: Record) -> str | None:
    """When the run first changed something: its first mutating step that really ran."""
    if rec.get("dry_run"):
        return None
    times = [str(s.get("started_at")) for s in rec.get("steps") or []
             if s.get("mutating") and s.get("status") in ("passed", "failed") and s.get("started_at")]
    return min(times) if times else None


def _part(rec: Record | None) -> dict[str, Any]:
    """What the page needs of one run (cached)."""
    if rec is None or not (rec.get("incident") or rec.get("resumes")):
        return {"incident": None, "resumes": None}
    return {"incident": rec.get("incident"), "severity": rec.get("severity"), "resumes": rec.get("resumes"),
            "run_id": rec.get("run_id"), "drill": rec.get("drill"), "env": rec.get("env"), "status": rec.get("status"),
            "dry_run": bool(rec.get("dry_run")), "started_at": rec.get("started_at"),
            "finished_at": rec.get("finished_at"), "first_action": _first_action(rec), "events": _events(rec)}


def run_parts(archive: Archive, cache: Cache) -> dict[str, dict[str, Any]]:
    """Every readable run's part, by run id: cached ones reused, new ones read from their record."""
    cached, fresh, parts = cache.section("incidents"), {}, {}
    for run in archive.runs:
        manifest = archive.entries.get(run.run_id, {}).get("manifest_sha256")
        hit = cached.get(run.run_id)
        if hit and hit.get("manifest") == manifest:
            part = hit["part"]
        else:
            try:
                part = _part(load_record(archive.root, run.run_id))
            except EvidenceError:
                continue  # unreadable: verify names it; read again next time
        fresh[run.run_id] = {"manifest": manifest, "part": part}
        parts[run.run_id] = part
    cache.data["incidents"] = fresh
    return parts


def resumed_by(parts: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Run id → the run that resumed it (the reverse of each record's ``resumes``), both readable."""
    return {str(p["resumes"]): run_id for run_id, p in parts.items() if p.get("resumes") in parts}


def page_runs(found: list["Incident"]) -> set[str]:
    """Runs that get a full page whatever their age: those of every open incident and of the
    ``RECENT_INCIDENTS`` most recently opened (bounded, like the other full pages); an older
    incident's runs link to their run-time HTML when their page has gone."""
    chosen = [i for i in found if i.open] + [i for i in found if not i.open][:RECENT_INCIDENTS]
    return {str(p["run_id"]) for incident in chosen for p in incident.runs}


def _target(severity: str | None, env: str | None, project: Path) -> float:
    minutes = RESPONSE_TARGETS.get(severity or "P3", RESPONSE_TARGETS["P3"])
    try:
        overrides = environments.load_environment(str(env), project).response_targets if env else {}
    except DrillbookError:
        overrides = {}  # an environment gone or broken since: the defaults apply
    return float(overrides.get(severity or "P3", minutes))  # type: ignore[call-overload]  # keys are severities


def incidents(parts: dict[str, dict[str, Any]], project: Path) -> list[Incident]:
    """Every incident the runs name, open ones first, then the most recently opened."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for part in parts.values():
        incident = part.get("incident") or (parts.get(str(part.get("resumes"))) or {}).get("incident")
        if incident and INCIDENT_ID.fullmatch(str(incident)):  # as drillbook validates it: safe in an anchor
            by_id.setdefault(str(incident), []).append(part)
    found = []
    for incident_id, runs in by_id.items():
        runs.sort(key=lambda p: str(p.get("started_at") or ""))
        given = [p["severity"] for p in runs if p.get("severity") in SEVERITIES]
        severity = min(given) if given else None  # "P0" < "P1": the most severe
        passed = [str(p["finished_at"]) for p in runs if p.get("status") == "passed" and not p.get("dry_run")]
        actions = [str(p["first_action"]) for p in runs if p.get("first_action")]
        found.append(Incident(incident_id, runs, severity, _target(severity, runs[0].get("env"), project),
                              parse_time(runs[0].get("started_at")), parse_time(min(actions)) if actions else None,
                              parse_time(min(passed)) if passed else None))
    return sorted(found, key=lambda i: (not i.open, -(i.opened.timestamp() if i.opened else 0)))


def _stamp(at: str) -> str:
    """A timeline's time, to the second (``when`` rounds to the minute)."""
    moment = parse_time(at)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _verdict(start: datetime | None, end: datetime | None, target: float, now: datetime) -> str:
    """``12.0 min — met (target 60 min)``, or, not yet reached, how long it has been."""
    if start is None:
        return "unknown"
    limit = f"target {target:g} min"
    if end is None:
        spent = (now - start).total_seconds()
        return f"not yet ({_minutes(spent)} so far) — {'missed' if spent > target * 60 else 'within'} ({limit})"
    spent = (end - start).total_seconds()
    return f"{_minutes(spent)} — {'met' if spent <= target * 60 else 'missed'} ({limit})"


def _evidence(part: dict[str, Any], page: str, pages: set[str], html: set[str]) -> str:
    run_id = str(part["run_id"])
    if run_id in pages:
        return link("evidence", page, run_page(run_id))
    return link("notebook as run", page, run_html(run_id)) if run_id in html else "page not published"


def _section(incident: Incident, pages: set[str], html: set[str], now: datetime) -> str:
    page = INCIDENTS
    state, target = ("open" if incident.open else "resolved"), incident.target_minutes
    out = [f"## {esc(incident.id)} {{ #{slug('incident-' + incident.id).lower()} }}\n",
           f"**{state}** · severity {esc(incident.severity or 'not given (P3 target)')} · opened "
           f"{when(incident.opened)} · {len(incident.runs)} run(s)\n",
           table(["", "Measured"], [
               ["Time to first action", esc(_verdict(incident.opened, incident.first_action, target, now))],
               ["Time to resolution", esc(_verdict(incident.opened, incident.resolved, target, now))]]),
           table(["Run", "Status", "Started", "Evidence"], [
               [esc(p["run_id"]), badge(str(p.get("status")), bool(p.get("dry_run"))), when(p.get("started_at")),
                _evidence(p, page, pages, html)]
               for p in incident.runs]),
           "**Timeline**\n",
           table(["When", "Who", "What"], [[esc(_stamp(at)), esc(who), esc(what)]
                                            for p in incident.runs for at, who, what in p.get("events") or []])]
    return "\n".join(out)


def incidents_page(found: list[Incident], pages: set[str], html: set[str], now: datetime) -> str:
    """The page; ``pages``: runs with a full page, ``html``: runs whose run-time HTML is published."""
    # The build time only when an open incident's "so far" depends on it: otherwise the page stays unchanged
    # between publishes (a rebuild writes only what changed).
    asof = f", as of **{when(now)}**" if any(i.open for i in found) else ""
    out = [front_matter("toc", title="Incidents") + "# Incidents\n",
           f"Every incident the evidence names{asof}: open ones first. An incident is open "
           "until one of its real runs passed. Response targets: P0 15 min, P1 1 h, P2 4 h, P3 24 h, unless the "
           "environment of its first run sets `response_targets` (minutes per severity).\n"]
    if not found:
        out.append("No run names an incident yet (`drillbook run … --incident INC-42 --severity P1`).\n")
    out += [_section(incident, pages, html, now) for incident in found]
    out.append(f"See also: {link('dashboard', INCIDENTS, DASHBOARD)}\n")
    return "\n".join(out)


def open_incidents(found: list[Incident], page: str) -> str:
    """The dashboard's first box: the open incidents, each linked to its section."""
    still = [i for i in found if i.open]
    if not still:
        return ""
    rows = "\n".join(f"- [{esc(i.id)}]({link_target(page, i)}) · severity {esc(i.severity or '—')} · opened "
                     f"{when(i.opened)} · {len(i.runs)} run(s), none passed yet" for i in still)
    return admonition("danger", f"{len(still)} open incident(s)", rows)


def link_target(page: str, incident: Incident) -> str:
    return f"{rel(page, INCIDENTS)}#{slug('incident-' + incident.id).lower()}"
