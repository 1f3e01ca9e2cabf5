"""``drillbook schedule``: every entry with its next firing and whether it is overdue; ``schedule
install`` puts ``drillbook run --due`` in cron or a systemd timer for this project."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer

from .. import paths
from .app import app, err, out, table

schedule_app = typer.Typer(
    help="The schedule (parameters/schedule.yaml): list it, or install the timer that runs it.",
    invoke_without_command=True, no_args_is_help=False,
)
app.add_typer(schedule_app, name="schedule")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


@schedule_app.callback()
def schedule(ctx: typer.Context) -> None:
    """List every entry: cron, next firing, last run, and OVERDUE when the cron fired and no run
    followed within the entry's grace (grace: in schedule.yaml, default 1 h)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..config import schedule as schedule_mod
    from ..evidence import freeze
    from ..runner.due import last_finished
    from .run import _ledger_folder

    # Freezes are read from the archive itself, once (the ledger may be an S3 archive's local copy).
    scopes = {found.scope for found in freeze.active()}
    now = datetime.now(timezone.utc)
    finished = last_finished(_ledger_folder())
    rows = []
    for entry in schedule_mod.load_schedule():
        last = finished.get((entry.drill, entry.env))
        missed = schedule_mod.overdue_since(entry, last, now)
        state = f"OVERDUE since {_when(missed)}" if missed else (
            "due" if schedule_mod.is_due(entry.cron, last, now) else "ok")
        if scopes & {freeze.ALL, entry.env}:
            state += " (frozen)"
        rows.append([entry.drill, entry.env, entry.cron.text, _when(entry.cron.next_after(now)), _when(last), state])
    if not rows:
        out.print("no schedule: add entries to parameters/schedule.yaml (see drillbook list for drill names)")
        return
    out.print(table("Schedule (UTC)", ["drill", "env", "cron", "next firing", "last run", "state"], rows))


@schedule_app.command()
def install(
    print_only: bool = typer.Option(False, "--print", help="Print the crontab line (or units) instead of installing."),
    systemd: bool = typer.Option(False, "--systemd", help="A systemd user timer instead of a crontab line."),
    every: int = typer.Option(5, help="Minutes between two `drillbook run --due`."),
    unit_dir: Optional[str] = typer.Option(None, help="With --systemd: where to write the units (default ~/.config/systemd/user)."),
) -> None:
    """Make this machine run `drillbook run --due` for this project every few minutes. Running it
    again changes nothing (or replaces this project's entry, e.g. with a new --every)."""
    from pathlib import Path

    from ..config import schedule_install as inst

    project = paths.project_root()
    if systemd:
        units = inst.systemd_units(project, every)
        if print_only:
            out.print(f"# {units.name}.service\n{units.service}\n# {units.name}.timer\n{units.timer}", markup=False)
            return
        written, units = inst.install_systemd(project, every, Path(unit_dir) if unit_dir else None)
        err.print(f"{'wrote ' + ', '.join(map(str, written)) if written else 'units already up to date'}", markup=False)
        manual = inst.enable_timer(units)
        if manual:
            err.print(f"systemd (user) is not reachable here; enable the timer with: {manual}", markup=False, soft_wrap=True)
        out.print(f"installed: {units.name}.timer every {every} min", markup=False)
        return
    if print_only:
        out.print(inst.cron_line(project, every), markup=False, soft_wrap=True)
        return
    changed, line = inst.install_crontab(project, every)
    out.print(f"{'installed' if changed else 'already installed'}: {line}", markup=False, soft_wrap=True)
