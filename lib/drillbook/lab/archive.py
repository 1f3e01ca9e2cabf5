"""The lab's WAL archive for point-in-time restores: ``.lab/wal-archive`` and a base backup kept in it.

Every node archives finished WAL segments there (``archive_settings``, written into
postgresql.conf at initdb; a lab created before archiving gets them with ``ALTER SYSTEM`` and a
restart of its primary), and ``lab up`` keeps one base backup on the primary's current timeline
in ``.lab/wal-archive/base`` (a failover starts a new timeline: the next ``lab up`` or the
point-in-time-restore drill takes a new one). The logic is the PostgreSQL target's
(``targets.postgres.pitr``); this module only places it in the lab.
"""
from __future__ import annotations

import psycopg

from ..targets.postgres import Postgres
from ..targets.postgres.pitr import archive_command, archive_settings, keep_base_backup
from .oslevel import chown
from .state import NODES, LabPaths, Say


def archive_dir(paths: LabPaths) -> str:
    return str(paths.root / "wal-archive")


def server_conf_lines(paths: LabPaths) -> list[str]:
    """The archive settings for the lab's postgresql.conf (``pg.render_server_conf``)."""
    return archive_settings(archive_dir(paths))


def ensure_archive(pg: Postgres, paths: LabPaths, user: str, primary: str, say: Say) -> None:
    """The archive directory exists, the primary archives into it, and a base backup is kept there."""
    directory = paths.root / "wal-archive"
    (directory / "base").mkdir(parents=True, exist_ok=True)
    for path in (directory, directory / "base"):
        path.chmod(0o700)
        chown(path, user)
    if pg.connections.query(primary, "SHOW archive_mode")[0][0] == "off":
        say(f"turning on WAL archiving into {directory} (restarts {primary})")
        command = _literal(archive_command(str(directory)))
        for name in sorted(NODES, key=lambda n: n != primary):
            try:  # the primary must; a standby that cannot gets the settings when it is next rebuilt
                pg.connections.query(name, "ALTER SYSTEM SET archive_mode = 'on'")
                pg.connections.query(name, f"ALTER SYSTEM SET archive_command = {command}")
            except psycopg.Error:
                if name == primary:
                    raise
        pg.servers.stop(primary, "fast")
        pg.servers.start(primary)
    backup, taken = keep_base_backup(pg, str(directory), primary)
    if taken:
        say(f"kept a base backup for point-in-time restores: {backup.path}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
