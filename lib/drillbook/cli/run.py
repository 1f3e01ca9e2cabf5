"""``drillbook run``: one notebook against one environment, or every schedule entry that is due."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from .. import paths
from ..errors import DrillbookError, NotebookError
from .app import STATUS_COLOURS, app, err, out, print_error

if TYPE_CHECKING:  # annotations only: importing the runner costs start-up time
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
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID", help="Continue a failed or aborted run: steps that completed and are safe to skip are skipped, the rest run again."),
    allow_changed: bool = typer.Option(False, "--allow-changed", help="With --resume: resume although the notebook changed since (the record says so)."),
) -> None:
    """Run a notebook against an environment with papermill and archive signed evidence.

    With --resume RUN_ID the notebook, environment and parameters are the run's; the new run has its own
    bundle and names the run it resumes.

    Exit status: 0 passed, 1 failed/error/aborted (evidence archived), 2 bad input (nothing ran).
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
    raise typer.Exit(run_one(request))


def run_one(request: RunRequest) -> int:
    """Prepare, execute and report one run; the exit status for it."""
    from ..runner.execute import execute
    from ..runner.plan import prepare
    from ..runner.progress import CellProgress

    plan = prepare(request)
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
    out.print(f"evidence: {outcome.bundle}", soft_wrap=True)
    return 0 if outcome.status == "passed" else 1


def _run_due() -> int:
    from datetime import datetime, timezone

    from ..config import schedule
    from ..evidence.archive import latest_runs
    from ..journal import parse_iso
    from ..runner.plan import RunRequest

    finished = {(e["drill"], e["env"]): parse_iso(e["finished_at"])
                for e in latest_runs(paths.archive_root(), dry_runs=False)}
    worst = 0
    for entry in schedule.due_entries(schedule.load_schedule(), finished, datetime.now(timezone.utc)):
        request = RunRequest(entry.drill, entry.env, dict(entry.parameters), approve=list(entry.approve),
                             approved_by="schedule")
        try:
            worst = max(worst, run_one(request))
        except DrillbookError as exc:  # one bad entry must not stop the others
            print_error(exc)
            worst = max(worst, exc.exit_code)
    return worst
