"""What ``drillbook.start()`` asks for, and what it does when this kernel already has a run open.

* ``wanted``: the environment, severity and incident id, from the call or from the working copy's
  ``incident.json`` (``incidentfile``), validated (bad values: one line, nothing opened);
* ``keep``: ``start()`` again while an interactive run is open (Run All, re-running the cell)
  keeps that run, same environment and run id; asking for another environment, or for LIVE on a
  dry run (or the reverse), is refused with one line: finish the run first;
* ``open_interactive`` and ``archive``: the runner's side of a person's run (``runner/interactive.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from . import incidentfile, journal, kernel, paths
from .config.environments import Environment
from .config.secrets import Redactor
from .errors import DrillbookError, ResumeRefused, RunOpen
from .evidence.record import Journal, Record, Results

if TYPE_CHECKING:  # annotations only: the runner's pieces load once a person opens a run
    from .runner.interactive import InteractiveRun

DEFAULT_ENV = "local"
# What start() raises before it changes anything: an open run stays open (the cell hook lets it be).
REFUSALS = (RunOpen, incidentfile.IncidentError, ResumeRefused)


@dataclass(frozen=True)
class Wanted:
    env: str
    severity: str | None
    incident: str | None
    runbook: str | None  # named by incident.json
    resume: str | None = None  # the run this one resumes (``runner/resume.py``)
    allow_changed: bool = False


def wanted(env: str | None, severity: str | None, incident: str | None, folder: Path, resume: str | None = None,
           allow_changed: bool = False) -> Wanted:
    """What the call asks for, completed from ``folder/incident.json`` when there is one; when it resumes
    a run, from that run's record (its environment, severity and incident)."""
    severity, incident = incidentfile.validate_severity(severity), incidentfile.validate_incident(incident)
    if resume and os.environ.get(journal.RUN_DIR_VAR):  # the runner chose the environment and locked it
        raise ResumeRefused("resume=… is for a run a person starts in JupyterLab",
                            f"resume from the command line: drillbook run --resume {resume}")
    if resume:
        earlier = _resumable(resume, env)
        env, severity = earlier["env"], severity or earlier.get("severity")
        incident = incident or earlier.get("incident")
    want = _wanted(env, severity, incident, folder)
    return replace(want, resume=resume, allow_changed=allow_changed) if resume else want


def _resumable(resume: str, env: str | None) -> Record:
    from .runner import resume as resuming_runs  # the runner's pieces: only when a person resumes a run

    return resuming_runs.original(resume, paths.archive_root(), env)


def _wanted(env: str | None, severity: str | None, incident: str | None, folder: Path) -> Wanted:
    found = incidentfile.load_incident_file(folder)
    if found is None:
        return Wanted(env or DEFAULT_ENV, severity, incident, None)
    if env and found.env and env != found.env:
        raise incidentfile.IncidentError(
            f"this working copy is for environment {found.env!r} (incident.json), not {env!r}",
            f"open a working copy for {env} instead (drillbook incident open … --env {env})")
    return Wanted(found.env or env or DEFAULT_ENV, severity or found.severity, incident or found.incident,
                  found.runbook)


class OpenRun(Protocol):
    """The parts of an open run that ``keep`` reads and changes (a ``Drill``)."""

    env: Environment
    dry_run: bool
    change: str | None
    approved: set[str]
    run_id: str
    data: Journal

    def approve_gate(self, gate: str, how: str | None = None, method: str = "panel") -> None: ...

    def _save(self) -> None: ...

    def _say(self, text: str) -> None: ...


def keep(run: OpenRun, want: Wanted, dry_run: bool, approve: list[str], change: str | None) -> None:
    """``start()`` again while ``run`` is open: keep it, or refuse what would change it."""
    mode = "a dry run" if run.dry_run else "LIVE"
    if want.env != run.env.name:
        raise RunOpen(f"run {run.run_id} is open on {run.env.name}; it cannot switch to {want.env}",
                      "call drill.finish() to end it, then start the run on the other environment")
    if bool(dry_run) != run.dry_run:
        raise RunOpen(f"run {run.run_id} on {run.env.name} is open as {mode}",
                      f"call drill.finish() to end it, then start again with dry_run={bool(dry_run)}")
    if change and run.change and change != run.change:
        raise RunOpen(f"run {run.run_id} is open under change {run.change}, not {change}",
                      "call drill.finish() to end it, then start again with the other change reference")
    if change and not run.change:
        run.change = run.data["change"] = change
        run._save()
    for gate in approve:
        if gate not in run.approved:
            run.approve_gate(gate, "approved when the run was started again (approve parameter)", "approve")
    run._say(f"run {run.run_id} is still open on {run.env.name} ({mode}): kept, nothing restarted")


def announce(run: OpenRun, previous: str | None) -> None:
    """The run's first line; after an earlier run in this kernel, which outputs are stale."""
    prod = " — PRODUCTION" if run.env.production else ""
    mode = "DRY RUN (nothing will be changed)" if run.dry_run else "LIVE"
    run._say(f"drillbook run {run.run_id} on {run.env.name}{prod}: {mode}")
    if previous and previous != run.run_id:
        run._say(f"outputs still on screen that end with [run {previous}], or with no run id, are from an "
                 "earlier run: only those ending with this run's id belong to it")


def open_interactive(env: Environment, project: Path, want: Wanted, dry_run: bool, approve: list[str],
                     change: str | None, run_id: str | None, redactor: Redactor) -> InteractiveRun:
    """Lock the environment and open the run folder of a person's run (``LockBusy`` if taken)."""
    from .runner import interactive  # the runner's pieces: only in a kernel a person runs

    operator, source = journal.operator_identity()
    opening = interactive.Opening(env=env, project=project, dry_run=dry_run, approve=approve, change=change,
                                  severity=want.severity, incident=want.incident, operator=operator,
                                  operator_source=source, notebook=interactive.notebook_path(project, want.runbook),
                                  runbook=want.runbook, resume=want.resume, allow_changed=want.allow_changed)
    return interactive.open_run(opening, run_id, redactor)


def archive(run: InteractiveRun, data: Journal, results: Results | None, summary: str,
            say: Callable[[str], None]) -> None:
    """A closed interactive run: print its summary, archive the bundle, stop watching cells. A
    failure to archive leaves the marker: the next drillbook command archives the run."""
    try:
        print(summary, flush=True)
        kernel.flush_output()  # the summary is part of the notebook archived
        run.archive(data, results)
        say(f"evidence archived and signed: {run.bundle}")
    except (DrillbookError, OSError) as exc:
        what = exc.message if isinstance(exc, DrillbookError) else str(exc)
        say(f"✗ evidence not archived yet ({what}); any drillbook command archives it")
    finally:
        kernel.unhook()
