"""``drillbook run``: one notebook against one environment, or every schedule entry that is due."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .. import paths
from ..errors import ChangeRequired, DrillbookError, NotebookError
from .app import STATUS_COLOURS, app, err, out, print_error

if TYPE_CHECKING:  # annotations only: importing the runner costs start-up time
    from ..config import schedule
    from ..runner.plan import RunRequest


def _parse_parameters(values: list[str]) -> dict[str, str]:
    parsed = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NotebookError(f"bad parameter {item!r}", "write -p name=value")
        parsed[key.strip()] = value
    return parsed


@app.command()
def run(
    name: Optional[str] = typer.Argument(None, help="Catalog name (see `drillbook list`) or path to a notebook."),
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Environment name (see `drillbook envs`)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Notebook parameter as name=value; repeatable."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what mutating steps would do; change nothing."),
    approve: list[str] = typer.Option([], "--approve", help="Approve a named gate (dangerous step); repeatable."),
    approval: list[str] = typer.Option([], "--approval", help="An approval id (drillbook approve) that opens its gate; repeatable. Required for a real run in production."),
    change: Optional[str] = typer.Option(None, help="Change reference; required for mutating runs in production."),
    timeout: Optional[float] = typer.Option(None, help="Seconds before the run is interrupted (default: the notebook's metadata, else 1800)."),
    wait: float = typer.Option(0.0, help="Seconds to wait for another run on the same environment to finish."),
    due: bool = typer.Option(False, "--due", help="Run every schedule entry that is due (for cron)."),
    skip_preflight: bool = typer.Option(False, "--skip-preflight", help="Do not check that SSH hosts accept connections first."),
    severity: Optional[str] = typer.Option(None, help="Severity of the incident this run serves: P0, P1, P2 or P3 (kept in the record)."),
    incident: Optional[str] = typer.Option(None, help="Id of the incident this run serves, e.g. INC-42 (kept in the record)."),
    scheduler: Optional[str] = typer.Option(None, help="Set by a scheduler (e.g. airflow): a run a freeze refuses is recorded as a 'frozen' skip."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID", help="Continue a failed or aborted run: steps that completed and are safe to skip are skipped, the rest run again."),
    allow_changed: bool = typer.Option(False, "--allow-changed", help="With --resume: resume although the notebook changed since (the record says so)."),
) -> None:
    """Run a notebook against an environment with papermill and archive signed evidence.

    With --resume RUN_ID the notebook, environment and parameters are the run's; the new run has its own
    bundle and names the run it resumes.

    Exit status: 0 passed, 1 failed/error/aborted (evidence archived), 2 bad input (nothing ran),
    3 refused: the environment is frozen (drillbook freeze; nothing ran).
    """
    if due:
        if name or env:
            raise NotebookError("--due runs the schedule; do not also name a notebook or environment")
        raise typer.Exit(_run_due())
    if not resume and (not name or not env):
        raise NotebookError("name a notebook and an environment", "drillbook run NAME --env ENV (see drillbook list / envs)")
    if allow_changed and not resume:
        raise NotebookError("--allow-changed goes with --resume RUN_ID")
    from ..runner.plan import RunRequest

    request = RunRequest(name or "", env or "", _parse_parameters(param), dry_run, list(approve), change, timeout, wait,
                         preflight=not skip_preflight, severity=severity, incident=incident,
                         approvals=list(approval), allow_changed=allow_changed)
    if resume:
        from ..runner.resume import request_for

        request = request_for(resume, request, paths.project_root(), paths.archive_root())
    if scheduler:
        _skip_if_frozen(request.target, request.env, scheduler)
    raise typer.Exit(run_one(request, scheduler))


def _skip_if_frozen(drill: str, env: str, scheduler: str) -> None:
    """A scheduled run on a frozen environment: record the skip, say so, exit 3."""
    from ..evidence import freeze

    found = freeze.frozen(env)
    if found is not None:
        freeze.record_skip(drill, env, scheduler[:40], found)
        out.print(f"SKIPPED {drill} on {env}: {found.describe()}", markup=False, soft_wrap=True)
        raise typer.Exit(3)


def _require_change_for_production(request: RunRequest, scheduler: str) -> None:
    from ..config.environments import load_environment

    env = load_environment(request.env)
    if env.production:
        raise ChangeRequired(f"a scheduled run ({scheduler}) of {request.target} on production environment "
                             f"{env.name!r} needs a change reference; nothing ran",
                             "add change: CHG-1234 to the entry in parameters/schedule.yaml (Airflow: or trigger "
                             "with conf {\"change\": \"CHG-1234\"})")


def run_one(request: RunRequest, scheduler: str | None = None) -> int:
    """Prepare, execute and report one run; the exit status for it. A scheduled run (``scheduler``)
    on a production environment needs a change reference up front: no one is there to give one."""
    from ..evidence import freeze
    from ..runner.execute import execute
    from ..runner.plan import prepare
    from ..runner.progress import CellProgress

    if scheduler and not request.change:  # asked first: a scheduled entry is fixed in its schedule file
        _require_change_for_production(request, scheduler)
    plan = prepare(request)
    if freeze.stops(plan.entry.kind if plan.entry else "notebook"):
        freeze.refuse_if_frozen(plan.env.name)  # one line, before anything is said about running; execute asks again
    for approval in plan.approvals:
        err.print(f"gate {approval['gate']} opened by approval {approval['id']} of {approval['approver']} "
                  f"(plan {approval['plan_sha256'][:16]}, expires {approval['expires_at']})")
    resumes = f", resuming run {request.resume}" if request.resume else ""
    dry = " (dry run)" if request.dry_run else ""
    err.print(f"running {plan.name} on {plan.env.name}{dry}: run {plan.run_id}{resumes}")
    outcome = execute(plan, CellProgress(f"{plan.name}@{plan.env.name}"))
    colour = STATUS_COLOURS[outcome.status]
    reason = f" — {outcome.reason}" if outcome.reason else ""
    out.print(f"[{colour}]{outcome.status.upper()}[/{colour}] {plan.name} on {plan.env.name}{reason}")
    for delivery in outcome.record.get("notifications", []):
        if not delivery["ok"]:
            err.print(f"warning: notification to {delivery['target']} failed: {delivery['error']}", markup=False,
                      soft_wrap=True)
    out.print(f"run: {outcome.run_id}")
    out.print(f"evidence: {outcome.bundle}", soft_wrap=True)
    return 0 if outcome.status == "passed" else 1


def _run_due() -> int:
    """Every entry that is due, each under a claim so that two invocations at once never run one
    twice; entries on a frozen environment are skipped (recorded once per firing)."""
    from datetime import datetime, timezone

    from ..config import schedule
    from ..runner import due as due_mod

    archive, state = _ledger_folder(), paths.state_dir()  # an S3 archive: its ledger, copied here
    worst = 0
    for entry in schedule.load_schedule():
        with due_mod.claim(state, entry) as claimed:
            if not claimed:
                err.print(f"skipped {entry.key}: another `drillbook run --due` is running it", markup=False)
                continue
            now = datetime.now(timezone.utc)
            _tell_if_overdue(entry, archive, state, now)
            if due_mod.due_now(entry, archive, now):  # asked again under the claim: never twice
                worst = max(worst, _run_entry(entry, archive, state, now))
    return worst


def _tell_if_overdue(entry: schedule.Entry, archive: Path, state: Path, now: datetime) -> None:
    """An entry whose firing went unanswered past its grace: notify its environment, once per firing."""
    from .. import notify
    from ..config import schedule
    from ..config.environments import load_environment
    from ..config.secrets import Redactor
    from ..evidence.archive import run_dir
    from ..runner import due as due_mod

    latest = {(e["drill"], e["env"]): e for e in due_mod.latest_entries(archive)}.get((entry.drill, entry.env))
    last = due_mod.parse_iso(latest["finished_at"]) if latest else None
    missed = schedule.overdue_since(entry, last, now)
    if missed is None or not due_mod.first_time(state, entry, "overdue", missed):
        return
    err.print(f"overdue: {entry.key} fired at {missed:%Y-%m-%d %H:%M} UTC and no run followed within {entry.grace}",
              markup=False)
    try:
        env = load_environment(entry.env)
    except DrillbookError as exc:
        print_error(exc)
        return
    link = str(run_dir(archive, latest["run_id"])) if latest else "no run recorded yet"
    message = notify.overdue_message(entry.drill, entry.env, f"{missed:%Y-%m-%d %H:%M} UTC", str(entry.grace),
                                     latest["finished_at"] if latest else None, link)
    for delivery in notify.send(env, message, Redactor()):
        if not delivery.ok:
            err.print(f"warning: notification to {delivery.target} failed: {delivery.error}", markup=False,
                      soft_wrap=True)


def _run_entry(entry: schedule.Entry, archive: Path, state: Path, now: datetime) -> int:
    from ..errors import Frozen, LockBusy
    from ..evidence import freeze
    from ..runner import due as due_mod
    from ..runner.plan import RunRequest

    found = freeze.frozen(entry.env)  # the project's archive itself (``archive``: maybe a ledger's copy)
    firing = entry.cron.previous_before(now) or now
    if found is not None:
        if due_mod.first_time(state, entry, "frozen", firing):
            freeze.record_skip(entry.drill, entry.env, "run --due", found)
        err.print(f"skipped {entry.key}: {found.describe()}", markup=False, soft_wrap=True)
        return 0
    request = RunRequest(entry.drill, entry.env, dict(entry.parameters), approve=list(entry.approve),
                         change=entry.change, approved_by="schedule")
    try:
        return run_one(request, "run --due")
    except (LockBusy, Frozen) as exc:  # the next invocation runs it; not a failure of this one
        err.print(f"skipped {entry.key}: {exc.message}", markup=False, soft_wrap=True)
        return 0
    except DrillbookError as exc:  # one bad entry must not stop the others
        print_error(exc)
        return exc.exit_code


def _ledger_folder() -> Path:
    """The archive's folder, or a local copy of an S3 archive's ledger (new entries fetched)."""
    from ..evidence.store import project_archive

    where = project_archive()
    if isinstance(where, Path):
        return where
    from ..evidence import remote

    return remote.sync_ledger(where, paths.state_dir())
