"""``drillbook publish``: the site's pages from the catalog and the archive, built by mkdocs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import paths
from ..errors import EvidenceError
from .app import ARCHIVE_HELP, app, archive_at, err, out


@app.command()
def publish(
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the built site (default: site/)."),
    serve: bool = typer.Option(False, "--serve", help="Generate the pages, then serve a live preview (mkdocs serve)."),
    full_runs: int = typer.Option(10, "--full-runs", help="Full evidence pages for the latest N runs of each drill; older runs are listed and linked."),
    dev_addr: Optional[str] = typer.Option(None, "--dev-addr", help="With --serve: address to serve on (default 127.0.0.1:8000)."),
) -> None:
    """Generate the site's pages from the catalog and the archive, then build it with `mkdocs build --strict`."""
    from .. import site

    where = archive_at(archive)
    if archive is not None and isinstance(where, Path) and not where.exists():
        # a mistyped --archive must not publish an empty site
        raise EvidenceError(f"no evidence archive at {archive}", "check --archive (or run a drill first)")
    project = paths.project_root()
    if not isinstance(where, Path):
        from ..evidence import remote

        where = remote.sync(where, paths.state_dir(project))  # a local mirror, refreshed by ETag
    if serve:
        raise typer.Exit(site.serve(project, where, full_runs, dev_addr))
    result = site.publish(project, where, out_dir.resolve() if out_dir else None, full_runs)
    gen = result.generated
    err.print(f"pages: {gen.stats.files} files ({gen.stats.written} written, {gen.stats.copied} copied, "
              f"{gen.stats.removed} removed) for {gen.runs} run(s), {gen.full_pages} with a full page, in {gen.seconds:.1f} s; "
              f"mkdocs build --strict in {result.build_seconds:.1f} s", soft_wrap=True)
    if gen.runs and not gen.verified:
        err.print("[yellow]verify found problems: the site shows them (evidence page)[/yellow]")
    out.print(f"site: open {result.index}", soft_wrap=True)  # one line: people copy it
