"""What the PostgreSQL target reports, as values, and the error it raises.

``NodeState`` (one node now), ``Lag``, ``TableSum`` (row count + content checksum of a table),
``Backup``, ``ServedCert`` (the certificate a server presents), ``Credentials`` and ``Rotation``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ...errors import DrillbookError


class PostgresError(DrillbookError):
    """A PostgreSQL operation on a target failed (the run goes on to its cleanups)."""

    exit_code = 1


@dataclass(frozen=True)
class NodeState:
    """What one node is doing now. ``role`` is ``primary``, ``standby`` or ``down``."""

    name: str
    role: str
    address: str
    port: int
    timeline: int | None = None
    streaming: bool | None = None  # standbys: is the WAL receiver streaming?
    upstream_port: int | None = None  # standbys: the port it streams from
    lag_bytes: int | None = None  # standbys: WAL not yet replayed, compared with the primary
    lag_seconds: float | None = None  # standbys: the primary's replay_lag (None once idle)
    fenced: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Lag:
    node: str
    bytes: int  # WAL the standby has not replayed yet
    seconds: float | None  # the primary's view (pg_stat_replication.replay_lag); None when idle


@dataclass(frozen=True)
class TableSum:
    rows: int
    md5: str  # md5 over the md5 of every row, in primary-key order


@dataclass(frozen=True)
class Backup:
    """A base backup on ``host`` at ``path`` (a data directory with its WAL, ready to start)."""

    path: str
    host: str
    source: str  # the node it was taken from
    label: str
    started_at: float  # wall clock (time.time())
    finished_at: float
    size_bytes: int

    @property
    def seconds(self) -> float:
        return round(self.finished_at - self.started_at, 3)

    def age(self, now: float | None = None) -> float:
        """Seconds since the backup finished: the data a restore right now would lose."""
        return round((now if now is not None else time.time()) - self.finished_at, 3)


@dataclass(frozen=True)
class ServedCert:
    sha256: str  # hex fingerprint of the DER certificate the server presents
    subject: str
    not_after: str  # ISO 8601, UTC
    serial: int
    verified: bool  # did it verify against the service's CA (sslrootcert) and name?
    error: str = ""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Rotation:
    old_user: str
    new_user: str
    published_at: float  # wall clock: clients reading the secret from now on get the new login
