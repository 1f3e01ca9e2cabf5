"""Verbs that read the evidence archive: ``verify`` and ``status``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.text import Text

from .app import STATUS_COLOURS, app, archive_path, err, out, table


@app.command()
def verify(
    archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence)."),
    public_key: list[Path] = typer.Option([], "--public-key", help="Trust only this public key (PEM); repeatable."),
) -> None:
    """Recompute every hash and signature; name each run changed, removed, reordered or added outside the ledger."""
    from ..evidence.verify import verify_archive

    report = verify_archive(archive_path(archive), public_key or None)
    for problem in report.problems:
        out.print(f"[red]✗[/red] {problem}")
    if not report.ok:
        out.print(f"verify: {len(report.problems)} problem(s) in an archive of {report.runs} run(s)")
        _notify_verify(archive_path(archive), [str(p) for p in report.problems])
        raise typer.Exit(1)
    out.print(f"verify: {report.runs} run(s), ledger chain, signatures and every file intact")


def _notify_verify(archive: Path, problems: list[str]) -> None:
    """Tell every environment's notification targets; a dead one is printed, never fatal."""
    from .. import notify

    for delivery in notify.notify_verify(archive, problems):
        if not delivery.ok:
            err.print(f"warning: notification to {delivery.target} failed: {delivery.error}", markup=False,
                      soft_wrap=True)


def _print_freezes(archive: Path) -> None:
    from ..evidence import freeze

    for found in freeze.active(archive):
        out.print(Text.assemble(("FROZEN ", "bold red"), found.describe()), soft_wrap=True)
    skips = freeze.skipped(archive)
    if skips:
        last = skips[-1]
        out.print(f"{len(skips)} scheduled run(s) skipped because of a freeze; the last: {last.get('drill')} on "
                  f"{last.get('env')} at {last.get('at')} ({last.get('scheduler')})", markup=False, soft_wrap=True)


@app.command()
def status(
    drill: Optional[str] = typer.Option(None, help="Only this drill or runbook."),
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Only this environment."),
    only: Optional[str] = typer.Option(None, "--status", help="Only runs with this status (passed, failed, error, aborted)."),
    archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence)."),
) -> None:
    """Show the latest run of each notebook on each environment."""
    from ..evidence import status as status_mod

    frame = status_mod.latest_table(archive_path(archive), drill=drill, env=env, status=only)
    _print_freezes(archive_path(archive))
    if frame.empty:
        out.print("no runs recorded yet" + (" matching the filters" if drill or env or only else ""))
        return
    rows = [[r.drill, r.env, f"[{STATUS_COLOURS.get(r.status, 'white')}]{r.status}[/]" + (" (dry run)" if r.dry_run else ""),
             r.finished, r.age, r.run_id] for r in frame.itertuples()]
    out.print(table("Latest runs", ["drill", "env", "status", "finished (UTC)", "age", "run id"], rows))
