"""Replication lag: what the primary and each standby see, and why a standby falls behind.

The ``postgres-replication-lag`` runbook reads (never changes) both sides with ``observe`` and
names the cause with ``diagnose``; ``watch`` observes until the evidence is conclusive (a link
that went quiet needs a few seconds of silence before it can be told from a pause).

Causes, from the two views (``pg_stat_replication`` on the primary, ``pg_stat_wal_receiver`` on
the standby): *disconnected* (the primary has no walsender for it), *link silent* (both ends
still think they are connected, neither hears the other: a partition or a frozen process),
*replay behind* (WAL arrives but is not replayed), *healthy*.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg

from ..targets.postgres import Postgres
from ..targets.postgres.conventions import parse_lsn

HEALTHY, DISCONNECTED, SILENT, REPLAY = "healthy", "disconnected", "link silent", "replay behind"


@dataclass(frozen=True)
class View:
    """One standby as both sides see it at one moment."""

    standby: str
    primary: str
    primary_lsn: int
    walsender: str | None  # its state on the primary (streaming, catchup, …); None: not connected
    reply_age: float | None  # seconds since the primary last heard from it
    receiver: str | None  # the standby's WAL receiver status; None: none running (or unreachable)
    receipt_age: float | None  # seconds since the standby last heard from the primary
    received_lsn: int
    replayed_lsn: int

    @property
    def lag_bytes(self) -> int:
        return max(0, self.primary_lsn - self.replayed_lsn)

    @property
    def unreceived_bytes(self) -> int:
        return max(0, self.primary_lsn - self.received_lsn)


@dataclass(frozen=True)
class Diagnosis:
    standby: str
    cause: str
    lag_bytes: int
    detail: str
    views: list[View] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.standby}: {self.cause} — {self.detail}"


def _age(value: object) -> float | None:
    return float(value) if value is not None else None  # type: ignore[arg-type]


def observe(pg: Postgres, standby: str, primary: str) -> View:
    """Both sides' view of ``standby`` now (read-only: catalog views and LSN functions)."""
    row = pg.connections.query(primary, "SELECT pg_current_wal_lsn()::text, (SELECT state FROM pg_stat_replication "
                                        "WHERE application_name = %s LIMIT 1), (SELECT extract(epoch FROM now() - "
                                        "reply_time) FROM pg_stat_replication WHERE application_name = %s LIMIT 1)",
                               (standby, standby))[0]
    try:
        mine = pg.connections.query(standby, "SELECT (SELECT status FROM pg_stat_wal_receiver), (SELECT extract(epoch "
                                             "FROM now() - last_msg_receipt_time) FROM pg_stat_wal_receiver), "
                                             "pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text")[0]
    except psycopg.Error:
        mine = (None, None, None, None)
    return View(standby, primary, parse_lsn(row[0]), row[1], _age(row[2]), mine[0], _age(mine[1]),
                parse_lsn(mine[2]) if mine[2] else 0, parse_lsn(mine[3]) if mine[3] else 0)


def diagnose(views: list[View], stale_seconds: float, max_lag_bytes: int) -> Diagnosis:
    """The cause, from successive views of one standby (the last is the latest)."""
    now = views[-1]
    grows = len(views) > 1 and now.lag_bytes > views[0].lag_bytes
    trend = f"{now.lag_bytes} bytes behind" + (f" and growing (from {views[0].lag_bytes})" if grows else "")
    if now.walsender is None:
        cause, why = DISCONNECTED, (f"{now.primary} has no WAL sender for it (its receiver: {now.receiver or 'none'}); "
                                    "it cannot reach the primary: network, authentication or primary_conninfo")
    elif (now.reply_age or 0) > stale_seconds and (now.receipt_age is None or now.receipt_age > stale_seconds):
        cause, why = SILENT, (f"{now.primary} last heard from it {now.reply_age:.1f} s ago and it last heard from "
                              f"{now.primary} {_seconds(now.receipt_age)}: both ends think they are connected and "
                              "neither hears the other (network partition, or a frozen process)")
    elif now.lag_bytes > max_lag_bytes and now.unreceived_bytes <= max_lag_bytes:
        cause, why = REPLAY, "WAL arrives but is not replayed fast enough (standby busy, or recovery conflicts)"
    elif now.lag_bytes > max_lag_bytes:
        cause, why = SILENT if grows else REPLAY, "WAL is sent but arrives slowly (a slow or lossy link)"
    else:
        cause, why = HEALTHY, f"streaming, within {max_lag_bytes} bytes"
    return Diagnosis(now.standby, cause, now.lag_bytes, f"{trend}; {why}", list(views))


def _seconds(age: float | None) -> str:
    return f"{age:.1f} s ago" if age is not None else "never (no receiver)"


def watch(pg: Postgres, standby: str, primary: str, *, wait_seconds: float, stale_seconds: float,
          max_lag_bytes: int, interval: float = 0.25) -> Diagnosis:
    """Observe until the diagnosis is conclusive (anything but healthy), or ``wait_seconds`` pass
    (then healthy, or the last diagnosis)."""
    deadline = time.monotonic() + wait_seconds
    views = [observe(pg, standby, primary)]
    while True:
        found = diagnose(views, stale_seconds, max_lag_bytes)
        if found.cause != HEALTHY or time.monotonic() >= deadline:
            return found
        time.sleep(interval)
        views = [views[0], observe(pg, standby, primary)]


def slots(pg: Postgres, primary: str) -> list[str]:
    """Replication slots on the primary and the WAL each one holds back (a cause of full disks)."""
    rows = pg.connections.query(primary, "SELECT slot_name, active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                         "restart_lsn), 0)::bigint FROM pg_replication_slots ORDER BY 1")
    return [f"{name}: {'active' if active else 'INACTIVE'}, holds {held} bytes of WAL" for name, active, held in rows]


ADVICE = {
    HEALTHY: ["Nothing to do: the standby streams within bounds."],
    DISCONNECTED: ["From the standby's host, test the primary's port (pg_isready -h PRIMARY -p PORT) and read the standby's log.",
                   "Check primary_conninfo, the replication password and pg_hba.conf on the primary."],
    SILENT: ["The link between the two hosts drops packets: check firewalls (nft list ruleset), routes and the network.",
             "Check that neither postgres is frozen (ps -o stat: T). Once the link is back the standby catches up by itself.",
             "If it stays cut longer than wal_keep_size allows (or its slot's WAL fills the disk), rebuild the standby."],
    REPLAY: ["Look for long queries on the standby (recovery conflicts) and its disk's latency; replay catches up once they end."],
}


def stale_after(pg: Postgres, standby: str) -> float:
    """How long a silent link must last to be called silent: three status intervals of the standby
    (it reports to the primary at least that often while WAL flows), at least 3 s."""
    try:
        value = pg.connections.query(standby, "SELECT setting::float FROM pg_settings "
                                              "WHERE name = 'wal_receiver_status_interval'")[0][0]
    except (psycopg.Error, IndexError):
        return 30.0
    return max(3.0, 3 * float(value)) if value and float(value) > 0 else 30.0
