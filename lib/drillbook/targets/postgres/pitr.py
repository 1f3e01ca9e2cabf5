"""Point-in-time recovery of a PostgreSQL service: its WAL archive, kept base backups, and restores
to a moment into a scratch instance.

The service archives every finished WAL segment into a directory (``archive_command``) and keeps
a base backup on its current timeline there (``keep_base_backup``); ``restore_to`` copies that
backup into a scratch instance on another port and replays the archive up to a target time or
LSN, where it pauses (``recovery_target_action = 'pause'``): read-only, consistent, the moment
just before the target. Nothing here touches the source's data.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from .backup import Scratch
from .conventions import FENCE_MARKER, PASSFILE, conf_string, first_line, parse_lsn, render_node_conf
from .results import PostgresError

if TYPE_CHECKING:  # annotations only: Postgres composes the parts this module drives
    from . import Postgres


def archive_command(directory: str) -> str:
    """Copy a finished segment into ``directory`` atomically; an identical copy already there counts
    as archived (a retry after a crash), a different one is refused (never overwrite history)."""
    d = shlex.quote(directory)
    return (f"if test -f {d}/%f; then cmp -s %p {d}/%f; "
            f"else cp %p {d}/%f.tmp && mv {d}/%f.tmp {d}/%f; fi")


def restore_command(directory: str) -> str:
    return f"cp {shlex.quote(directory)}/%f %p"


def archive_settings(directory: str) -> list[str]:
    """postgresql.conf lines that archive WAL into ``directory``. No ``archive_timeout`` here (each
    switch costs a 16 MiB segment); production sets one no longer than its RPO, and a restore
    closes the current segment itself (``archive_current_wal``)."""
    return ["archive_mode = on", f"archive_command = {conf_string(archive_command(directory))}"]


@dataclass(frozen=True)
class KeptBackup:
    """A base backup kept for point-in-time recovery (what its ``backup_label`` says)."""

    path: str
    label: str
    timeline: int
    start_lsn: int
    start_wal: str  # the first WAL segment it needs
    start_time: str  # as the server wrote it, e.g. "2026-12-01 11:30:00 UTC"


def parse_backup_label(path: str, text: str) -> KeptBackup | None:
    """The fields of a ``backup_label`` file; None when it is not one."""
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    try:
        where, _, rest = fields["START WAL LOCATION"].partition(" (file ")
        return KeptBackup(path, fields.get("LABEL", ""), int(fields["START TIMELINE"]), parse_lsn(where),
                          rest.rstrip(")"), fields.get("START TIME", ""))
    except (KeyError, ValueError):
        return None


def kept_backups(pg: Postgres, node: str, directory: str) -> list[KeptBackup]:
    """The base backups in ``directory`` (the archive's ``base/``) on ``node``'s host, oldest first."""
    d = shlex.quote(directory)
    out = pg.servers.run(node, f"for f in {d}/*/backup_label; do [ -f \"$f\" ] && echo \"== $f\" && cat \"$f\"; done; true",
                         what="list the kept base backups", timeout=30).stdout
    found = []
    for chunk in out.split("== ")[1:]:
        name, _, text = chunk.partition("\n")
        backup = parse_backup_label(str(Path(name).parent), text)
        if backup is not None:
            found.append(backup)
    return sorted(found, key=lambda b: (b.timeline, b.start_lsn))


def keep_base_backup(pg: Postgres, directory: str, node: str | None = None,
                     max_age: float | None = None) -> tuple[KeptBackup, bool]:
    """A base backup on the primary's current timeline in the archive ``directory``'s ``base/``: the
    newest kept one (if younger than ``max_age`` seconds), else a new one; then older ones and the
    WAL only they needed are removed, which bounds the archive and the WAL a restore replays.
    True when it took one."""
    node = node or pg.replication.primary()
    timeline = pg.replication.state(node).timeline
    base = f"{directory}/base"
    kept = kept_backups(pg, node, base)
    if kept and kept[-1].timeline == timeline and not _older_than(kept[-1], max_age):
        return kept[-1], False
    label = f"pitr-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    pg.backups.base_backup(target=f"{base}/{label}", node=node, label=label)
    *older, newest = kept_backups(pg, node, base)
    old = " ".join(shlex.quote(b.path) for b in older)
    cleanup = pg.servers.tool_path(node, "pg_archivecleanup")
    pg.servers.run(node, (f"rm -rf {old}; " if old else "") +
                   f"{cleanup} {shlex.quote(directory)} {shlex.quote(newest.start_wal)}",
                   what="remove older base backups and WAL", timeout=300)
    return newest, True


def _older_than(backup: KeptBackup, max_age: float | None) -> bool:
    if max_age is None:
        return False
    try:  # the server writes it as "2026-12-01 11:13:34 UTC"; another zone name: keep the backup
        started = datetime.fromisoformat(backup.start_time.replace(" UTC", "+00:00"))
    except ValueError:
        return False
    return started.tzinfo is not None and (datetime.now(timezone.utc) - started).total_seconds() > max_age


def archive_current_wal(pg: Postgres, node: str, directory: str, timeout: float = 60.0) -> str:
    """Close the current WAL segment (``pg_switch_wal``) and wait until it is in the archive, so a
    restore can replay past this moment. Returns the segment's name."""
    segment = pg.connections.query(node, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    path = shlex.quote(f"{directory}/{segment}")
    deadline = time.monotonic() + timeout
    while pg.servers.run(node, f"test -f {path}", what="look for the archived segment", check=False,
                         timeout=30).exit_code != 0:
        if time.monotonic() > deadline:
            failed = pg.connections.query(node, "SELECT last_failed_wal, failed_count FROM pg_stat_archiver")[0]
            raise PostgresError(f"WAL segment {segment} not archived within {timeout:g} s "
                                f"(last failure: {failed[0] or 'none'}, {failed[1]} failures)",
                                "check archive_command in postgresql.conf and the server log")
        time.sleep(0.05)
    return segment


def recovery_conf(archive: str, target_time: str | None, target_lsn: str | None) -> str:
    """Settings that replay ``archive`` up to just before the target and pause there (archiving off:
    the scratch instance must never write into the service's archive)."""
    if bool(target_time) == bool(target_lsn):
        raise PostgresError("give exactly one recovery target: a time or an LSN",
                            "set target_time (e.g. '2026-12-01 11:30:00+00') or target_lsn (e.g. '0/3000060')")
    target = (f"recovery_target_time = {conf_string(str(target_time))}" if target_time
              else f"recovery_target_lsn = {conf_string(str(target_lsn))}")
    return "\n".join([f"restore_command = {conf_string(restore_command(archive))}", target,
                      "recovery_target_inclusive = off  # stop just before the target",
                      "recovery_target_timeline = 'current'", "recovery_target_action = 'pause'",
                      "archive_mode = off", ""])


def restore_to(pg: Postgres, backup: KeptBackup, node: str, archive: str, port: int, data_dir: str,
               target_time: str | None = None, target_lsn: str | None = None, timeout: float = 600.0) -> Scratch:
    """Copy ``backup`` to ``data_dir``, replay ``archive`` to the target on ``port``, wait until it pauses there."""
    settings = recovery_conf(archive, target_time, target_lsn)
    d, src = shlex.quote(data_dir), shlex.quote(backup.path)
    t0 = time.monotonic()
    pg.servers.run(node, f"rm -rf {d} {d}.log && mkdir -p \"$(dirname {d})\" && cp -a {src} {d} && chmod 700 {d} && "
                         f"rm -f {d}/standby.signal {d}/{FENCE_MARKER} {d}/{PASSFILE} {d}/postmaster.pid && "
                         f"touch {d}/recovery.signal", what="copy the base backup", timeout=1800)
    pg.servers.write_node_conf(node, render_node_conf(port) + settings, data_dir=data_dir)
    scratch = Scratch(pg.connections, pg.servers, node, data_dir, pg.context.node(node).address, port, 0.0)
    result = pg.servers.run(node, f"{pg.servers.tool_path(node, 'pg_ctl')} start -D {d} -l {d}.log -w -t {int(timeout)}",
                            what="start the restored instance", timeout=timeout + 10, check=False)
    if not result.ok:
        _fail(pg, scratch, "did not start")
    _wait_paused(pg, scratch, t0 + timeout)
    scratch.restore_seconds = round(time.monotonic() - t0, 3)
    return scratch


def _wait_paused(pg: Postgres, scratch: Scratch, deadline: float) -> None:
    """Until recovery pauses at the target (the log says why when it stops short of it instead)."""
    while True:
        try:
            with scratch.connect(dbname="postgres") as conn:
                if conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused":
                    return
        except psycopg.Error as exc:
            if time.monotonic() > deadline:
                _fail(pg, scratch, first_line(exc))
        if time.monotonic() > deadline:
            _fail(pg, scratch, "the target was not reached in time")
        time.sleep(0.05)


def _fail(pg: Postgres, scratch: Scratch, why: str) -> None:
    log = shlex.quote(scratch.data_dir + ".log")
    tail = pg.servers.run(scratch.node, f"grep -E 'FATAL|recovery' {log} | tail -n 2", what="read the log",
                          check=False, timeout=30).stdout.strip().replace("\n", " | ")
    scratch.remove()
    raise PostgresError(f"point-in-time restore {why}: {tail or 'no log'}",
                        "is the target after the base backup, and is the WAL up to it archived?")


@dataclass(frozen=True)
class Replayed:
    lsn: str  # where replay paused
    bytes: int  # WAL replayed from the base backup's start to there
    last_commit: str | None  # the time of the last transaction replayed


def replayed(scratch: Scratch, backup: KeptBackup) -> Replayed:
    with scratch.connect(dbname="postgres") as conn:
        lsn, last = conn.execute("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text").fetchone()
    return Replayed(lsn, parse_lsn(lsn) - backup.start_lsn, last)
