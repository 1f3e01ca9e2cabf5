"""The Typer application, its two consoles and what every verb shares: tables, the archive option, errors.

Every command first turns runs whose runner was killed into 'aborted' records (the callback below).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import paths
from ..errors import DrillbookError, NotFound

if TYPE_CHECKING:
    from ..evidence.store import S3Archive

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,  # a real bug prints a plain traceback, never local variables
    help="Executable runbooks and recovery drills with signed, verifiable evidence.\n\n"
         "Start with `drillbook list` (what can run), `drillbook envs` (where), "
         "`drillbook run NAME --env ENV --dry-run` (try it safely), then `drillbook status` and `drillbook verify`.\n\n"
         "Evidence goes to the archive: reports/evidence, or the folder or s3://bucket/prefix that `archive:` in "
         "parameters/project.yaml names; $DRILLBOOK_ARCHIVE overrides both (S3 endpoint and credentials: the "
         "standard AWS settings).",
)
# In logs (cron, CI, make) there is no terminal width: be wide rather than wrap run ids.
_WIDTH = None if sys.stdout.isatty() else max(160, int(os.environ.get("COLUMNS", "0") or 0))
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, width=_WIDTH)

ARCHIVE_HELP = ("Evidence archive: a folder or s3://bucket/prefix (default: $DRILLBOOK_ARCHIVE, else archive: in "
                "parameters/project.yaml, else reports/evidence).")
STATUS_COLOURS = {"passed": "green", "failed": "red", "error": "red", "aborted": "yellow"}


def archive_path(archive: Optional[Path]) -> Path:
    """The --archive option, or the project's archive."""
    return archive.resolve() if archive else paths.archive_root()


def cache_root() -> Path:
    """Where local copies of an S3 archive are kept: the project's state folder, else the user's."""
    try:
        return paths.state_dir()
    except NotFound:  # --archive s3://… from outside a project
        return paths.home_dir()


def archive_at(archive: Optional[str]) -> Path | S3Archive:
    """The --archive option (a folder or ``s3://bucket/prefix``), or the project's archive."""
    from ..evidence.store import parse_location, project_archive

    return parse_location(archive) if archive else project_archive()


@app.callback()
def _recover(ctx: typer.Context) -> None:
    """Every command first turns runs whose runner was killed into 'aborted' records."""
    if ctx.resilient_parsing:
        return
    try:
        markers = paths.inflight_dir(paths.state_dir())
    except NotFound:  # not inside a project: nothing can be in flight
        return
    if not markers.is_dir() or not any(markers.glob("*.json")):
        return  # nothing in flight: the recovery (and its imports, 0.1 s of every command) is not needed
    from ..runner import inflight

    try:
        recovery = inflight.recover_aborted()
    except NotFound:
        return
    for run_id, status in recovery.recovered.items():
        if status == "aborted":
            err.print(f"recorded run {run_id} as aborted: its runner was killed before it finished")
        else:
            err.print(f"recorded run {run_id} as {status}: its runner stopped before it finished archiving")
    for problem in recovery.problems:
        err.print(f"warning: {problem}", markup=False, soft_wrap=True)


def table(title: str, columns: list[str], rows: Sequence[Sequence[object]]) -> Table:
    """A left-titled table; None cells print empty."""
    result = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*("" if v is None else str(v) for v in row))
    return result


def print_error(exc: DrillbookError) -> None:
    """One line for the error and one for the hint, never a traceback."""
    from rich.text import Text

    # Messages may contain brackets (e.g. [REDACTED:name]): never interpret them as markup.
    err.print(Text.assemble(("error: ", "bold red"), exc.message), soft_wrap=True)
    if exc.hint:
        err.print(Text(f"hint: {exc.hint}"), soft_wrap=True)
