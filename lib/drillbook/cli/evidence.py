"""Verbs that read the evidence archive: ``verify`` and ``status``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rich.text import Text

from .. import paths
from ..errors import NotFound
from .app import ARCHIVE_HELP, STATUS_COLOURS, app, archive_at, cache_root, err, out, table

if TYPE_CHECKING:  # annotations only: the evidence modules load cryptography
    from ..evidence.anchors import Anchor
    from ..evidence.store import S3Archive


def _anchors(archive: Path, against: list[str], required: bool) -> list[Anchor]:
    """The sites named, and the project's git anchors: always with --anchors, else when the archive
    is the project's own (a HEAD older than the newest anchor is then caught by plain verify)."""
    from ..evidence import anchors
    from ..evidence.anchors import AnchorError

    found = [anchors.site_anchor(source) for source in against]
    if required:
        found.extend(anchors.git_anchors(paths.project_root()))
    else:
        found.extend(anchors.anchors_of(archive))
    if required and not any(a.where.startswith("git") for a in found):
        raise AnchorError(f"no anchors on the {anchors.BRANCH} branch of the project's git repository",
                          "run drillbook anchor first (it commits the ledger's head to that branch)")
    return found


def _local(where: Path | S3Archive) -> Path:
    """A folder archive as it is; an S3 archive's ledger copied locally (new entries only)."""
    if isinstance(where, Path):
        return where
    from ..evidence import remote

    return remote.sync_ledger(where, cache_root())


@app.command()
def verify(
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP + " Or a published site's folder."),
    public_key: list[Path] = typer.Option([], "--public-key", help="Trust only this public key (PEM); repeatable."),
    against: list[str] = typer.Option([], "--against", help="A published site (folder or URL) whose anchor the ledger must still hold; repeatable."),
    anchors: bool = typer.Option(False, "--anchors", help="Hold the ledger to every anchor on the project's evidence-anchors git branch."),
) -> None:
    """Recompute every hash and signature against the pinned keys (parameters/trust.yaml) and any anchors;
    name each run changed, removed, reordered, added outside the ledger or signed by an untrusted key."""
    from ..evidence import published
    from ..evidence.verify import verify_archive

    where = archive_at(archive)
    found: list[Anchor] = []
    if isinstance(where, Path):
        found = _anchors(where, against, anchors)
        report = verify_archive(where, public_key or None, anchors=found)
    else:  # S3: downloaded into a fresh folder and verified there, naming the objects
        from ..evidence import remote

        report = remote.verify(where, public_key or None)
    for problem in report.problems:
        out.print(f"[red]✗[/red] {problem}", markup=True, highlight=False, soft_wrap=True)
    if not report.ok:
        out.print(f"verify: {len(report.problems)} problem(s) in an archive of {report.runs} run(s)")
        _notify_verify(where if isinstance(where, Path) else str(where), [str(p) for p in report.problems])
        raise typer.Exit(1)
    held = f", held to {len(found)} anchor(s)" if found else ""
    site = published.site_archive(where) if isinstance(where, Path) else None
    if site is not None:
        from ..evidence.ledger import read_entries

        out.print(f"verify: published site with {report.runs} run(s) ({published.published_bundles(site, read_entries(site))} "
                  f"bundle(s) published): ledger chain, signatures and every published file intact{held}")
        return
    out.print(f"verify: {report.runs} run(s), ledger chain, signatures and every file intact{held}")


def _notify_verify(archive: Path | str, problems: list[str]) -> None:
    """Tell every environment's notification targets; a dead one is printed, never fatal."""
    from .. import notify

    try:
        deliveries = notify.notify_verify(archive, problems)
    except NotFound:  # an archive checked outside any project: no environment to tell
        return
    for delivery in deliveries:
        if not delivery.ok:
            err.print(f"warning: notification to {delivery.target} failed: {delivery.error}", markup=False,
                      soft_wrap=True)


def _print_freezes(archive: Path | S3Archive) -> None:
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
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP),
    stale: bool = typer.Option(False, "--stale", help="List runbooks changed since (or never exercised by) their last passing drill; exit 1 when any (for CI)."),
) -> None:
    """Show the latest run of each notebook on each environment (or, with --stale, the runbooks that need a drill)."""
    if stale:
        raise typer.Exit(_stale(_local(archive_at(archive))))
    from ..evidence import status as status_mod

    location = archive_at(archive)
    where = _local(location)
    frame = status_mod.latest_table(where, drill=drill, env=env, status=only)
    _print_freezes(location)  # the archive itself: a copy of an S3 archive's ledger holds no freeze
    if frame.empty:
        out.print("no runs recorded yet" + (" matching the filters" if drill or env or only else ""))
        return
    rows = [[r.drill, r.env, f"[{STATUS_COLOURS.get(r.status, 'white')}]{r.status}[/]" + (" (dry run)" if r.dry_run else ""),
             r.finished, r.age, r.run_id] for r in frame.itertuples()]
    out.print(table("Latest runs", ["drill", "env", "status", "finished (UTC)", "age", "run id"], rows))


def _stale(archive: Path) -> int:
    from ..config import catalog
    from ..evidence.freshness import last_drills

    runbooks = {e.name: e.path for e in catalog.load_catalog(paths.project_root(), strict=False) if e.kind == "runbook"}
    found = sorted(last_drills(archive, runbooks).values(), key=lambda d: d.runbook)
    stale = [d for d in found if d.stale]
    if not stale:
        out.print(f"every runbook ({len(found)}) is unchanged since its last passing drill")
        return 0
    rows = [[d.runbook, d.reason(), d.drill or "", d.run_id or "", (d.finished_at or "")[:16].replace("T", " "),
             f"{d.rto_seconds:g} s" if d.rto_seconds is not None else ""] for d in stale]
    out.print(table(f"Stale runbooks ({len(stale)} of {len(found)})",
                    ["runbook", "why", "last drill", "run id", "finished (UTC)", "measured RTO"], rows))
    return 1

