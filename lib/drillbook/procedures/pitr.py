"""Point-in-time restore: undo a bad change by restoring a scratch copy to just before it.

The runbook (``runbooks/postgres-point-in-time-restore``) reads what the archive can restore
(``restorable_range``), needs one target (``target_given``: a dry run without one only diagnoses), chooses the kept base backup with
``choose_backup``, closes the current WAL segment, restores into a scratch instance paused just
before the target (``targets.postgres.pitr``) and checks where replay stopped
(``check_stopped_before``). The drill makes the bad change under the sequenced writer
(``bad_change``) and proves the copy with ``verify_restored``: the deleted rows are back, every
write acknowledged before the target is there, none begun after it is.
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

from ..errors import DrillbookError
from ..measure.compute import rpo
from ..measure.load import WRITES_TABLE, Load, clock
from ..targets.postgres import Postgres
from ..targets.postgres.backup import Scratch
from ..targets.postgres.conventions import parse_lsn
from ..targets.postgres.pitr import KeptBackup, Replayed

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


class NoBackupForTarget(DrillbookError):
    """No kept base backup starts before the recovery target."""

    exit_code = 1


# ----------------------------------------------------------------------------- the runbook (pure parts)
class _Run(Protocol):  # the parts of a Drill the target check uses
    dry_run: bool

    def not_applicable(self, title: str, reason: str) -> None: ...

    def require(self, name: str, ok: bool, detail: str = "") -> None: ...


NO_TARGET = ("no recovery target given (target_time or target_lsn), so no restore can be planned: "
             "choose one inside the range the diagnosis prints")


def target_given(drill: _Run, target_time: str | None, target_lsn: str | None) -> bool:
    """Exactly one target: True. None in a dry run: False, recorded as why no restore is planned (the
    diagnosis still runs, so the runbook is useful alone). A live run without one, or with both, stops."""
    if not target_time and not target_lsn and drill.dry_run:
        drill.not_applicable("Plan the restore", NO_TARGET)
        return False
    drill.require("one recovery target is given", bool(target_time) != bool(target_lsn),
                  f"target_time={target_time!r}, target_lsn={target_lsn!r}")
    return True


@dataclass(frozen=True)
class Archiver:
    """What the primary's archiver says (pg_stat_archiver), and its clock."""

    last_wal: str | None
    last_time: str | None
    failed: int
    last_failed_wal: str | None
    now: str


def describe_range(backups: Sequence[KeptBackup], segments: Sequence[str], archiver: Archiver) -> str:
    """What the archive holds and the range of targets it can restore to, in words."""
    wal = sorted(s for s in segments if WAL_NAME.match(s))
    held = (f"{len(wal)} WAL segment(s) archived ({wal[0]} … {wal[-1]}), the last at {archiver.last_time or 'unknown'}"
            if wal else "no WAL segment archived")
    failing = f"; the archiver failed {archiver.failed} time(s), last on {archiver.last_failed_wal}" if archiver.failed else ""
    if not backups:
        return f"no base backup kept; {held}{failing}. Nothing can be restored from this archive."
    oldest = backups[0]
    lines = [f"{len(backups)} base backup(s) kept, oldest {oldest.label} (started {oldest.start_time}, timeline "
             f"{oldest.timeline}, WAL from {oldest.start_wal}); {held}{failing}."]
    if oldest.start_wal not in wal:
        lines.append(f"The WAL the oldest backup starts from ({oldest.start_wal}) is not in the archive: a restore from it fails.")
    lines.append(f"A target can be restored if it is after {oldest.start_time} (the oldest backup's start) and before "
                 f"{archiver.now} (now: the restore archives the current WAL segment first).")
    return "\n".join(lines)


def parse_time(text: str) -> datetime:
    """A timestamp as PostgreSQL or an operator writes it ('2026-12-01 11:30:00+00', '… UTC', ISO 8601)."""
    value = text.strip().replace(" UTC", "+00:00")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DrillbookError(f"cannot read the time {text!r}", "write it as ISO 8601 with a zone, "
                             "e.g. 2026-12-01 11:30:00+00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def choose_backup(backups: Sequence[KeptBackup], target_time: str | None, target_lsn: str | None) -> KeptBackup:
    """The newest kept base backup that starts before the target (replay can only go forward)."""
    if target_time:
        at = parse_time(target_time)
        usable = [b for b in backups if b.start_time and parse_time(b.start_time) < at]
    elif target_lsn:
        if not LSN_TEXT.match(target_lsn):
            raise DrillbookError(f"target_lsn {target_lsn!r} is not a WAL position", "write it as PostgreSQL does, e.g. 0/5000060")
        usable = [b for b in backups if b.start_lsn < parse_lsn(target_lsn)]
    else:
        raise DrillbookError("no recovery target", "set target_time or target_lsn")
    if not usable:
        starts = ", ".join(b.start_time or hex(b.start_lsn) for b in backups) or "none kept"
        raise NoBackupForTarget(f"no base backup starts before the target (backups: {starts})",
                                "a point before the oldest base backup cannot be restored from this archive")
    return max(usable, key=lambda b: (b.timeline, b.start_lsn))


def stopped_before(replayed: Replayed, target_time: str | None, target_lsn: str | None) -> tuple[bool, str]:
    """Did replay pause before the target? (the last transaction replayed is older than it)"""
    if target_time:
        last = replayed.last_commit
        ok = last is None or parse_time(last) < parse_time(target_time)
        return ok, f"last transaction replayed at {last}, target {target_time}; paused at {replayed.lsn}"
    ok = parse_lsn(replayed.lsn) <= parse_lsn(str(target_lsn))
    return ok, f"paused at {replayed.lsn}, target {target_lsn}"


SCRATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
WAL_NAME = re.compile(r"^[0-9A-F]{24}$")
LSN_TEXT = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def restorable_range(pg: Postgres, node: str, wal_dir: str, backups: Sequence[KeptBackup]) -> str:
    """Read the archive on ``node``'s host and its archiver: which targets a restore can reach (read-only)."""
    listing = pg.servers.run(node, f"ls -1 {shlex.quote(wal_dir)} 2>/dev/null; true", what="list the WAL archive",
                             timeout=30).stdout.split()
    row = pg.connections.query(node, "SELECT last_archived_wal, last_archived_time::text, failed_count, last_failed_wal, "
                                     "clock_timestamp()::text FROM pg_stat_archiver")[0]
    return describe_range(backups, listing, Archiver(row[0], row[1], int(row[2]), row[3], str(row[4])))


def scratch_dir(pg: Postgres, node: str, name: str) -> str:
    """Where a scratch instance lives: ``scratch/<name>`` beside ``node``'s data directory (it is
    removed with ``rm -rf``: the name must be a plain one, never a path)."""
    if not SCRATCH_NAME.match(name):
        raise DrillbookError(f"scratch name {name!r} is not a plain name",
                             "use letters, digits, '-' and '_' (it becomes scratch/<name> beside the data directory)")
    return str(Path(pg.context.data_dir(node)).parent / "scratch" / name)


def scratch_at(pg: Postgres, node: str, name: str, port: int) -> Scratch:
    """The scratch instance a restore left running (a drill verifies it, then removes it)."""
    return Scratch(pg.connections, pg.servers, node, scratch_dir(pg, node, name), pg.context.node(node).address,
                   port, 0.0)


# ----------------------------------------------------------------------------- the drill
def server_time(pg: Postgres, node: str) -> str:
    """The server's clock now, as PostgreSQL writes it (a target for a dry run to plan with)."""
    return str(pg.connections.query(node, "SELECT clock_timestamp()::text")[0][0])


@dataclass(frozen=True)
class BadChange:
    target_time: str  # the server's clock just before the change: the restore's target
    before: float  # load clock before the server read its clock: writes acknowledged earlier precede the target
    after: float  # load clock after: writes begun later follow it
    deleted: tuple[int, ...]


def bad_change(pg: Postgres, load: Load) -> BadChange:
    """The fault: read the server's clock (the moment to restore to), then delete half of the
    writer's rows, as a mistaken ``DELETE`` would. Marks "fault" on the load's clock."""
    with pg.connections.connect() as conn:
        before = load.mark("fault")
        target = str(conn.execute("SELECT clock_timestamp()::text").fetchone()[0])
        after = clock()
        rows = conn.execute(f"DELETE FROM {WRITES_TABLE} WHERE run = %s AND seq %% 2 = 0 RETURNING seq",
                            (load.run,)).fetchall()
    return BadChange(target, before, after, tuple(sorted(int(r[0]) for r in rows)))


def wait_writes_after(load: Load, at: float, count: int = 10, timeout: float = 30.0) -> int:
    """Until ``count`` writes begun after ``at`` are acknowledged (WAL past the target to ignore)."""
    deadline = clock() + timeout
    while True:
        after = len(begun_after(load, at))
        if after >= count or clock() > deadline:
            return after
        time.sleep(0.02)


def begun_after(load: Load, at: float) -> list[int]:
    latencies = load.writer.latencies if load.writer else []
    return [a.seq for a, took in zip(load.acks, latencies) if a.at - took > at]


def present_in(scratch: Scratch, run: str) -> set[int]:
    with scratch.connect() as conn:
        return {int(r[0]) for r in conn.execute(f"SELECT seq FROM {WRITES_TABLE} WHERE run = %s", (run,)).fetchall()}


def verify_restored(drill: Drill, load: Load, change: BadChange, present: set[int]) -> None:
    """Checks and measures of the restored copy: deleted rows back, RPO, nothing from after the target."""
    acked_before = [a for a in load.acks if a.at < change.before]
    # Rows written after the target (in flight when the server read its clock) and then deleted
    # are rightly absent: only those acknowledged before it must come back.
    before = {a.seq for a in acked_before}
    wanted = [s for s in change.deleted if s in before]
    back = [s for s in wanted if s in present]
    drill.check("the rows the bad change deleted are back", bool(wanted) and len(back) == len(wanted),
                f"{len(back)} of {len(wanted)} deleted rows written before the target are in the restored copy "
                f"({len(change.deleted)} deleted in all)")
    loss = rpo(acked_before, present, change.before)
    drill.check("every write acknowledged before the target is present", loss.writes == 0,
                f"{len(acked_before) - loss.writes} of {len(acked_before)} present"
                + (f"; missing {list(loss.missing)[:5]}" if loss.writes else ""))
    later = begun_after(load, change.after)
    leaked = [s for s in later if s in present]
    drill.check("no write begun after the target is present", bool(later) and not leaked,
                f"{len(leaked)} of {len(later)} later writes present" + ("" if later else " (no later write to prove it)"))
    drill.measure("rpo_seconds", loss.seconds, objective="rpo_seconds",
                  detail=f"first missing acknowledged write → the target ({loss.writes} missing)")
    drill.measure("rpo_writes", loss.writes, unit="writes", detail="acknowledged before the target, missing afterwards")
