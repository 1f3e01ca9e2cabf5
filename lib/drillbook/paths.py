"""Where things live: the project tree, the evidence archive, local state and the signing key.

Every location can be moved with an environment variable so tests (and operators with
several checkouts) never touch each other's files:

* ``DRILLBOOK_PROJECT``  project root (default: nearest parent holding ``parameters/``)
* ``DRILLBOOK_ARCHIVE``  evidence archive: a folder, or ``s3://bucket/prefix`` on object storage
  (``evidence.store``); it overrides the project's setting, ``archive:`` in
  ``parameters/project.yaml`` (``config.project``); without either, ``<project>/reports/evidence``
* ``DRILLBOOK_STATE``    locks and in-flight markers (default: ``<project>/.drillbook``)
* ``DRILLBOOK_HOME``     the signing key, outside the repository (default: ``~/.config/drillbook``),
  and ``runs/``, the private folders (0700) of runs in flight
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import EvidenceError, NotFound


def project_root(start: Path | None = None) -> Path:
    """The project: ``$DRILLBOOK_PROJECT``, else the nearest parent with ``parameters/environments``."""
    if os.environ.get("DRILLBOOK_PROJECT"):
        return Path(os.environ["DRILLBOOK_PROJECT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "parameters" / "environments").is_dir():
            return candidate
    raise NotFound(
        f"no drillbook project found at or above {here}",
        "run from a drillbook checkout, or set DRILLBOOK_PROJECT to its root",
    )


def archive_location(project: Path | None = None) -> str:
    """Where the archive is, as given: a folder, or an ``s3://`` URL (``evidence.store.parse_location``):
    ``$DRILLBOOK_ARCHIVE``, else the project's ``archive:`` setting, else ``reports/evidence``."""
    if os.environ.get("DRILLBOOK_ARCHIVE"):
        return os.environ["DRILLBOOK_ARCHIVE"]
    from .config.project import archive_setting

    project = project or project_root()
    return archive_setting(project) or str(project / "reports" / "evidence")


def archive_root(project: Path | None = None) -> Path:
    """The archive's folder; an archive on object storage has none (use ``archive_location``)."""
    location = archive_location(project)
    if location.startswith("s3://"):
        raise EvidenceError(f"the archive {location} is on object storage, and this reads a folder",
                            "set DRILLBOOK_ARCHIVE to a folder for this command")
    return Path(location).resolve()


def state_dir(project: Path | None = None) -> Path:
    if os.environ.get("DRILLBOOK_STATE"):
        return Path(os.environ["DRILLBOOK_STATE"]).resolve()
    return (project or project_root()) / ".drillbook"


def inflight_dir(state: Path) -> Path:
    """Where the markers of runs in flight are (``runner.inflight``)."""
    return state / "inflight"


def home_dir() -> Path:
    """Per-user directory for the signing key; deliberately outside any repository."""
    if os.environ.get("DRILLBOOK_HOME"):
        return Path(os.environ["DRILLBOOK_HOME"]).resolve()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "drillbook"


def run_root() -> Path:
    """The private folder (0700) that holds the folder of each run in flight: its unscrubbed
    notebook, journal and kernel sockets. Per user and outside the repository, so the next
    command can tell a run folder a runner of this user made from anything else."""
    return home_dir() / "runs"


def environments_dir(project: Path | None = None) -> Path:
    return (project or project_root()) / "parameters" / "environments"
