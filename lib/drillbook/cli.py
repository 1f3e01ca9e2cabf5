"""The ``drillbook`` command: one thin function per verb; the work happens in the modules.

Exit codes: 0 passed/ok, 1 a run did not pass (or verify/lint found problems), 2 bad input.
Errors print one line and a hint, never a traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import paths
from .errors import DrillbookError, EvidenceError, NotebookError, NotFound

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,  # a real bug prints a plain traceback, never local variables
    help="Executable runbooks and recovery drills with signed, verifiable evidence.\n\n"
         "Start with `drillbook list` (what can run), `drillbook envs` (where), "
         "`drillbook run NAME --env ENV --dry-run` (try it safely), then `drillbook status` and `drillbook verify`.",
)
# In logs (cron, CI, make) there is no terminal width: be wide rather than wrap run ids.
_WIDTH = None if sys.stdout.isatty() else max(160, int(os.environ.get("COLUMNS", "0") or 0))
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, width=_WIDTH)


def _archive(archive: Optional[Path]) -> Path:
    return archive.resolve() if archive else paths.archive_root()


@app.callback()
def _recover(ctx: typer.Context) -> None:
    """Every command first turns runs whose runner was killed into 'aborted' records."""
    from .runner import inflight

    if ctx.resilient_parsing:
        return
    try:
        recovery = inflight.recover_aborted()
    except NotFound:  # not inside a project: nothing can be in flight
        return
    for run_id, status in recovery.recovered.items():
        if status == "aborted":
            err.print(f"recorded run {run_id} as aborted: its runner was killed before it finished")
        else:
            err.print(f"recorded run {run_id} as {status}: its runner stopped before it finished archiving")
    for problem in recovery.problems:
        err.print(f"warning: {problem}", markup=False, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


# ----------------------------------------------------------------------------- catalog
@app.command("list")
def list_(kind: Optional[str] = typer.Option(None, help="Only 'runbook' or 'drill'.")) -> None:
    """List the runbooks and drills in the catalog."""
    from .config import catalog

    rows = [[e.name, e.kind, e.meta.title, e.meta.owner, e.meta.schedule or "on demand",
             ", ".join(e.meta.controls)] for e in catalog.load_catalog() if kind in (None, e.kind)]
    out.print(_table("Catalog", ["name", "kind", "title", "owner", "schedule", "controls"], rows))


@app.command()
def envs() -> None:
    """List the environments in parameters/environments/."""
    from .config import environments

    rows = []
    for env in environments.load_environments():
        objectives = ", ".join(f"{k}={v:g}" for k, v in env.objectives.items())
        rows.append([env.name, "yes" if env.production else "no", ", ".join(env.hosts),
                     ", ".join(env.services), objectives, env.description])
    out.print(_table("Environments", ["name", "production", "hosts", "services", "objectives", "description"], rows))


@app.command()
def lint() -> None:
    """Check every notebook and environment: parameters cell, kernelspec, no outputs, metadata, parameters."""
    from .config import lint as linting

    problems = linting.lint_project()
    for problem in problems:
        out.print(f"[red]✗[/red] {problem}")
    if problems:
        out.print(f"{len(problems)} problem(s)")
        raise typer.Exit(1)
    out.print("lint: all notebooks and environments are clean")


@app.command()
def new(
    name: str = typer.Argument(..., help="File name without .ipynb, e.g. pool-exhausted."),
    kind: str = typer.Option("runbook", help="'runbook' (runbooks/) or 'drill' (notebooks/drills/)."),
    title: str = typer.Option(..., help="Title shown in the catalog and on the site."),
    owner: str = typer.Option(..., help="Team or person who answers for it."),
) -> None:
    """Create a runbook or drill from the template in notebooks/templates/."""
    from .config.templates import new_notebook

    path = new_notebook(name, kind, title, owner)
    out.print(f"created {path}; open it in JupyterLab, then `drillbook lint`", soft_wrap=True)


# ----------------------------------------------------------------------------- running
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
    change: Optional[str] = typer.Option(None, help="Change reference; required for mutating runs in production."),
    timeout: Optional[float] = typer.Option(None, help="Seconds before the run is interrupted (default: the notebook's metadata, else 1800)."),
    wait: float = typer.Option(0.0, help="Seconds to wait for another run on the same environment to finish."),
    due: bool = typer.Option(False, "--due", help="Run every schedule entry that is due (for cron)."),
    skip_preflight: bool = typer.Option(False, "--skip-preflight", help="Do not check that SSH hosts accept connections first."),
) -> None:
    """Run a notebook against an environment with papermill and archive signed evidence.

    Exit status: 0 passed, 1 failed/error/aborted (evidence archived), 2 bad input (nothing ran).
    """
    if due:
        if name or env:
            raise NotebookError("--due runs the schedule; do not also name a notebook or environment")
        raise typer.Exit(_run_due())
    if not name or not env:
        raise NotebookError("name a notebook and an environment", "drillbook run NAME --env ENV (see drillbook list / envs)")
    from .runner.plan import RunRequest

    request = RunRequest(name, env, _parse_parameters(param), dry_run, list(approve), change, timeout, wait,
                         preflight=not skip_preflight)
    raise typer.Exit(_run_one(request))


def _run_one(request: Any) -> int:
    from .runner.execute import execute
    from .runner.plan import prepare
    from .runner.progress import CellProgress

    plan = prepare(request)
    err.print(f"running {plan.name} on {plan.env.name}{' (dry run)' if request.dry_run else ''}: run {plan.run_id}")
    outcome = execute(plan, CellProgress(f"{plan.name}@{plan.env.name}"))
    colour = {"passed": "green", "failed": "red", "error": "red", "aborted": "yellow"}[outcome.status]
    reason = f" — {outcome.reason}" if outcome.reason else ""
    out.print(f"[{colour}]{outcome.status.upper()}[/{colour}] {plan.name} on {plan.env.name}{reason}")
    out.print(f"evidence: {outcome.bundle}", soft_wrap=True)
    return 0 if outcome.status == "passed" else 1


def _run_due() -> int:
    from datetime import datetime, timezone

    from .config import schedule
    from .evidence.archive import latest_runs
    from .journal import parse_iso
    from .runner.plan import RunRequest

    finished = {(e["drill"], e["env"]): parse_iso(e["finished_at"])
                for e in latest_runs(paths.archive_root(), dry_runs=False)}
    worst = 0
    for entry in schedule.due_entries(schedule.load_schedule(), finished, datetime.now(timezone.utc)):
        request = RunRequest(entry.drill, entry.env, dict(entry.parameters), approve=list(entry.approve))
        try:
            worst = max(worst, _run_one(request))
        except DrillbookError as exc:  # one bad entry must not stop the others
            _print_error(exc)
            worst = max(worst, exc.exit_code)
    return worst


# ----------------------------------------------------------------------------- evidence
@app.command()
def verify(
    archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence)."),
    public_key: list[Path] = typer.Option([], "--public-key", help="Trust only this public key (PEM); repeatable."),
) -> None:
    """Recompute every hash and signature; name each run changed, removed, reordered or added outside the ledger."""
    from .evidence.verify import verify_archive

    report = verify_archive(_archive(archive), public_key or None)
    for problem in report.problems:
        out.print(f"[red]✗[/red] {problem}")
    if not report.ok:
        out.print(f"verify: {len(report.problems)} problem(s) in an archive of {report.runs} run(s)")
        raise typer.Exit(1)
    out.print(f"verify: {report.runs} run(s), ledger chain, signatures and every file intact")


@app.command()
def status(
    drill: Optional[str] = typer.Option(None, help="Only this drill or runbook."),
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Only this environment."),
    only: Optional[str] = typer.Option(None, "--status", help="Only runs with this status (passed, failed, error, aborted)."),
    archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence)."),
) -> None:
    """Show the latest run of each notebook on each environment."""
    from .evidence import status as status_mod

    frame = status_mod.latest_table(_archive(archive), drill=drill, env=env, status=only)
    if frame.empty:
        out.print("no runs recorded yet" + (" matching the filters" if drill or env or only else ""))
        return
    colours = {"passed": "green", "failed": "red", "error": "red", "aborted": "yellow"}
    rows = [[r.drill, r.env, f"[{colours.get(r.status, 'white')}]{r.status}[/]" + (" (dry run)" if r.dry_run else ""),
             r.finished, r.age, r.run_id] for r in frame.itertuples()]
    out.print(_table("Latest runs", ["drill", "env", "status", "finished (UTC)", "age", "run id"], rows))


# ----------------------------------------------------------------------------- site
@app.command()
def publish(
    archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the built site (default: site/)."),
    serve: bool = typer.Option(False, "--serve", help="Generate the pages, then serve a live preview (mkdocs serve)."),
    full_runs: int = typer.Option(10, "--full-runs", help="Full evidence pages for the latest N runs of each drill; older runs are listed and linked."),
    dev_addr: Optional[str] = typer.Option(None, "--dev-addr", help="With --serve: address to serve on (default 127.0.0.1:8000)."),
) -> None:
    """Generate the site's pages from the catalog and the archive, then build it with `mkdocs build --strict`."""
    from . import site

    if archive is not None and not archive.exists():  # a mistyped --archive must not publish an empty site
        raise EvidenceError(f"no evidence archive at {archive}", "check --archive (or run a drill first)")
    project = paths.project_root()
    if serve:
        raise typer.Exit(site.serve(project, _archive(archive), full_runs, dev_addr))
    result = site.publish(project, _archive(archive), out_dir.resolve() if out_dir else None, full_runs)
    gen = result.generated
    err.print(f"pages: {gen.stats.files} files ({gen.stats.written} written, {gen.stats.copied} copied, "
              f"{gen.stats.removed} removed) for {gen.runs} run(s), {gen.full_pages} with a full page, in {gen.seconds:.1f} s; "
              f"mkdocs build --strict in {result.build_seconds:.1f} s", soft_wrap=True)
    if gen.runs and not gen.verified:
        err.print("[yellow]verify found problems: the site shows them (evidence page)[/yellow]")
    out.print(f"site: open {result.index}", soft_wrap=True)  # one line: people copy it


# ----------------------------------------------------------------------------- lab
lab_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="The embedded lab: a real PostgreSQL primary + streaming standby (and sshd) on 127.0.0.1, "
                           "under .lab/, described by parameters/environments/local.yaml.")
app.add_typer(lab_app, name="lab")


@lab_app.command("up")
def lab_up(
    pg1_port: Optional[int] = typer.Option(None, envvar="DRILLBOOK_LAB_PG1_PORT", help="Port of node pg1 (default 55432); chosen when the lab is created."),
    pg2_port: Optional[int] = typer.Option(None, envvar="DRILLBOOK_LAB_PG2_PORT", help="Port of node pg2 (default 55433)."),
    ssh_port: Optional[int] = typer.Option(None, envvar="DRILLBOOK_LAB_SSH_PORT", help="Port of the lab's sshd (default 55422)."),
) -> None:
    """Create the lab, or repair it (idempotent): start stopped nodes, rebuild a fenced one, start sshd."""
    from . import lab

    given = any(p is not None for p in (pg1_port, pg2_port, ssh_port))
    ports = lab.LabPorts.from_env(pg1=pg1_port, pg2=pg2_port, ssh=ssh_port) if given else None
    with _lab_lock("lab up"):
        report = lab.up(paths.project_root(), ports, say=lambda line: err.print(f"lab: {line}", soft_wrap=True))
    _print_lab(report)


@lab_app.command("status")
def lab_status() -> None:
    """Show each node's role, timeline, replication lag and port, and sshd. Exit 1 when not healthy."""
    from . import lab

    report = lab.status(paths.project_root())
    _print_lab(report)
    if not report.healthy:
        raise typer.Exit(1)


@lab_app.command("down")
def lab_down(purge: bool = typer.Option(False, "--purge", help="Also delete .lab/ (data, secrets, keys).")) -> None:
    """Stop everything the lab started (nodes, scratch instances, sshd); remove nothing unless --purge."""
    from . import lab

    with _lab_lock("lab down"):
        lab.down(paths.project_root(), purge, say=lambda line: out.print(f"lab: {line}", soft_wrap=True))


def _lag_text(node: Any) -> str | None:
    if node.lag_bytes is None:
        return None
    return f"{node.lag_bytes} B" + (f", {node.lag_seconds:.3f} s" if node.lag_seconds is not None else "")


def _lab_lock(what: str) -> Any:
    """The lab is environment 'local': repairing or stopping it must wait for a drill acting on it."""
    from .runner import locks

    return locks.hold(paths.state_dir(), "local", what,
                      hint=f"wait for that run to finish, then run drillbook {what} again")


def _print_lab(report: Any) -> None:
    from rich.markup import escape

    colours = {"primary": "green", "standby": "cyan", "down": "red"}
    rows = []
    for n in report.nodes:
        notes = ", ".join(filter(None, ["fenced" if n.fenced else "", "not streaming" if n.streaming is False else "",
                                        n.detail if n.role == "down" else ""]))
        rows.append([n.name, f"[{colours.get(n.role, 'white')}]{n.role}[/]", f"{n.address}:{n.port}", n.timeline,
                     n.upstream_port, _lag_text(n), escape(notes)])
    out.print(_table(f"Lab {report.lab_dir} (PostgreSQL {report.pg_major}, servers run as {report.os_user})",
                     ["node", "role", "address", "timeline", "streams from", "lag", "notes"], rows))
    out.print(f"ssh: {escape(report.ssh)}", soft_wrap=True)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    state = "[green]healthy[/green]" if report.healthy else "[red]not healthy[/red] (drillbook lab up repairs it)"
    out.print(f"lab: {state}")


# ----------------------------------------------------------------------------- entry point
def _print_error(exc: DrillbookError) -> None:
    from rich.text import Text

    # Messages may contain brackets (e.g. [REDACTED:name]): never interpret them as markup.
    err.print(Text.assemble(("error: ", "bold red"), exc.message), soft_wrap=True)
    if exc.hint:
        err.print(Text(f"hint: {exc.hint}"), soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click handles usage errors (exit 2) and --help; we handle DrillbookError."""
    try:
        app(args=argv, standalone_mode=True)
    except DrillbookError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
