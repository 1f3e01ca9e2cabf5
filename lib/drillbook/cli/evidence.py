"""Verbs that read the evidence archive: ``verify`` and ``status``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import ARCHIVE_HELP, STATUS_COLOURS, app, archive_at, cache_root, out, table


@app.command()
def verify(
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP),
    public_key: list[Path] = typer.Option([], "--public-key", help="Trust only this public key (PEM); repeatable."),
) -> None:
    """Recompute every hash and signature; name each run changed, removed, reordered or added outside the ledger."""
    from ..evidence.verify import verify_archive

    where = archive_at(archive)
    if isinstance(where, Path):
        report = verify_archive(where, public_key or None)
    else:
        from ..evidence import remote

        report = remote.verify(where, public_key or None)
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
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP),
) -> None:
    """Show the latest run of each notebook on each environment."""
    from ..evidence import status as status_mod

    where = archive_at(archive)
    if not isinstance(where, Path):
        from ..evidence import remote

        where = remote.sync_ledger(where, cache_root())  # the ledger alone, new entries only
    frame = status_mod.latest_table(where, drill=drill, env=env, status=only)
    if frame.empty:
        out.print("no runs recorded yet" + (" matching the filters" if drill or env or only else ""))
        return
    rows = [[r.drill, r.env, f"[{STATUS_COLOURS.get(r.status, 'white')}]{r.status}[/]" + (" (dry run)" if r.dry_run else ""),
             r.finished, r.age, r.run_id] for r in frame.itertuples()]
    out.print(table("Latest runs", ["drill", "env", "status", "finished (UTC)", "age", "run id"], rows))
