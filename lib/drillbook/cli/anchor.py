"""``drillbook anchor``: commit the ledger's head to the project's ``evidence-anchors`` git branch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import paths
from .app import app, archive_path, out


@app.command()
def anchor(archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence).")) -> None:
    """Record the ledger's head (seq, entry hash, time) as one commit on the evidence-anchors branch,
    without touching the working tree or the current branch; push that branch somewhere the archive's
    writers cannot rewrite. `drillbook verify --anchors` then holds the ledger to it."""
    from ..evidence import anchors

    done = anchors.write_git_anchor(paths.project_root(), archive_path(archive))
    out.print(f"anchored ledger seq {done.seq} (entry {done.hash[:16]}, recorded {done.recorded_at}) "
              f"on {done.where}", soft_wrap=True)
