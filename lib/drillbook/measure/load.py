"""The background load that measures recovery: a sequenced writer and an availability probe.

    from drillbook.measure.load import Load
    load = Load(writer=pg.connections.connector(), probe=pg.connections.connector(), run=drill.run_id)
    load.start()
    load.wait_steady()                        # writes acknowledged and probes passing before the fault
    fault = load.mark("fault"); pg.servers.stop(old)   # the clock of every measure is time.monotonic()
    ...                                       # recover (e.g. run the failover runbook)
    load.wait_for_write_after(fault)          # the first write the new primary acknowledges
    load.stop()
    with pg.connections.connect() as conn:
        outcome = load.outcome(fault, conn)   # RTO, RPO (writes and seconds), failed probes
        load.purge(conn)

* The writer inserts (run, seq) rows into ``drillbook.writes`` (the lab creates it; elsewhere
  ``ensure_table(conn)``) through whatever node accepts
  writes — its connector decides (``pg.connections.connector()`` lists every node with
  ``target_session_attrs=read-write``) — and records each acknowledged seq with its time and node.
  After an error it reconnects every ``retry_interval`` (20 ms) until a primary answers: that
  interval (plus a connection's set-up, ~5 ms with TLS) is the resolution of the measured RTO.
* The probe opens a new connection and runs ``SELECT 1`` every ``interval`` (≤ 50 ms, start to
  start), recording success or failure: availability, and credentials that still work.

The measures themselves are computed by ``measure.compute``. In a drill kernel that also runs a
runbook with papermill, use ``measure.isolated.IsolatedLoad`` (same API, in a process of its own).
"""
from __future__ import annotations

import bisect
import threading
import time
from typing import Callable, Protocol, Sequence

from ..errors import LoadTimeout, ProbeIntervalError
from .compute import (
    Ack,
    Outcome,
    ProbeResult,
    failed_probes,
    first_write_after,
    longest_outage,
    node_before,
    percentiles,
    probe_resolution,
    rpo,
    rto,
)

clock = time.monotonic  # one clock for faults, writes and probes
WRITES_TABLE = "drillbook.writes"


class Cursor(Protocol):
    """What the load reads from a DB-API/psycopg cursor."""

    rowcount: int

    def fetchall(self) -> list[tuple[object, ...]]: ...


class DbConnection(Protocol):
    """What the load needs of a connection: psycopg's, or a test's fake (autocommit)."""

    def execute(self, query: str, params: Sequence[object] | None = None) -> Cursor: ...

    def close(self) -> None: ...


Connector = Callable[[], DbConnection]  # returns a new connection each call


class SequencedWriter(threading.Thread):
    """Inserts 1, 2, 3, … for ``run`` through ``connect()``; records every acknowledged one."""

    def __init__(self, connect: Connector, run: str, interval: float = 0.01, retry_interval: float = 0.02) -> None:
        super().__init__(name=f"drillbook-writer-{run}", daemon=True)
        self.connect, self.run_name = connect, run
        self.interval, self.retry_interval = interval, retry_interval
        self.acks: list[Ack] = []
        self.latencies: list[float] = []  # seconds per acknowledged insert
        self.errors: list[tuple[float, str]] = []
        self.next_seq = 1
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        conn: DbConnection | None = None
        while not self._halt.is_set():
            if conn is None:
                conn = self._connect()
                if conn is None:
                    self._halt.wait(self.retry_interval)
                    continue
            seq, self.next_seq = self.next_seq, self.next_seq + 1  # a failed seq is never reused
            t0 = clock()
            try:
                conn.execute(f"INSERT INTO {WRITES_TABLE} (run, seq) VALUES (%s, %s)", (self.run_name, seq))
            except Exception as exc:  # the server died mid-write: the seq is unacknowledged
                self.errors.append((clock(), _first_line(exc)))
                _close(conn)
                conn = None
                continue
            now = clock()
            self.acks.append(Ack(seq, now, _node(conn)))
            self.latencies.append(now - t0)
            self._halt.wait(self.interval)
        _close(conn)

    def _connect(self) -> DbConnection | None:
        try:
            return self.connect()
        except Exception as exc:
            self.errors.append((clock(), _first_line(exc)))
            return None


class Probe(threading.Thread):
    """Opens a connection and runs ``SELECT 1`` every ``interval`` seconds, recording each attempt.

    ``max_in_flight`` 1: one attempt at a time, the next one ``interval`` after the last started,
    or as soon as it ends when it took longer (so a slow attempt widens the gap between probes).
    Above 1: attempts start on a fixed schedule whatever earlier ones take, up to that many at
    once, so the gap between starts stays ``interval`` even while connections are slow.
    """

    def __init__(self, connect: Connector, interval: float = 0.05, max_in_flight: int = 1) -> None:
        super().__init__(name="drillbook-probe", daemon=True)
        if interval > 0.05:
            raise ProbeIntervalError("probe interval must be ≤ 50 ms, or it dominates the measured RTO")
        self.connect, self.interval = connect, interval
        self.max_in_flight = max(1, int(max_in_flight))
        self.results: list[ProbeResult] = []  # in order of start
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        if self.max_in_flight > 1:
            self._run_fixed_rate()
            return
        while not self._halt.is_set():
            started = clock()
            self.results.append(self._attempt(started))
            self._halt.wait(max(0.0, self.interval - (clock() - started)))

    def _attempt(self, started: float) -> ProbeResult:
        try:
            conn = self.connect()
            try:
                conn.execute("SELECT 1")
            finally:
                _close(conn)
            return ProbeResult(started, clock(), True)
        except Exception as exc:
            return ProbeResult(started, clock(), False, _first_line(exc))

    def _run_fixed_rate(self) -> None:
        workers: list[threading.Thread] = []
        due = clock()
        while not self._halt.is_set():
            with self._lock:
                free = self._in_flight < self.max_in_flight
                self._in_flight += int(free)
            if free:  # all slots busy: this start is skipped, and the gap shows in the resolution
                workers = [w for w in workers if w.is_alive()]
                workers.append(threading.Thread(target=self._attempt_in_worker, args=(clock(),), daemon=True))
                workers[-1].start()
            due = max(due + self.interval, clock())  # behind schedule: go on from now, never in a burst
            self._halt.wait(max(0.0, due - clock()))
        for worker in workers:
            worker.join(timeout=10)

    def _attempt_in_worker(self, started: float) -> None:
        result = self._attempt(started)
        with self._lock:
            bisect.insort(self.results, result, key=lambda p: p.started)
            self._in_flight -= 1


class Load:
    """A writer and a probe running together, with named time marks (``mark("fault")``)."""

    def __init__(self, writer: Connector | None, probe: Connector | None, run: str,
                 probe_interval: float = 0.05, write_interval: float = 0.01, probe_in_flight: int = 1) -> None:
        self.writer = SequencedWriter(writer, run, write_interval) if writer else None
        self.probe = Probe(probe, probe_interval, probe_in_flight) if probe else None
        self.run = run
        self.marks: dict[str, float] = {}

    def start(self) -> Load:
        for thread in (self.writer, self.probe):
            if thread is not None:
                thread.start()
        self.marks["start"] = clock()
        return self

    def stop(self) -> None:
        for thread in (self.writer, self.probe):
            if thread is not None and thread.is_alive():
                thread.stop()
                thread.join(timeout=10)
        self.marks.setdefault("stop", clock())

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self, name: str) -> float:
        self.marks[name] = clock()
        return self.marks[name]

    @property
    def acks(self) -> list[Ack]:
        return list(self.writer.acks) if self.writer else []

    @property
    def probes(self) -> list[ProbeResult]:
        return list(self.probe.results) if self.probe else []

    def wait_steady(self, writes: int = 10, timeout: float = 15.0) -> None:
        """Wait for ``writes`` acknowledged writes and a passing probe: a fault needs a steady state."""
        deadline = clock() + timeout
        while clock() < deadline:
            enough = self.writer is None or len(self.writer.acks) >= writes
            probing = self.probe is None or any(p.ok for p in self.probe.results[-3:])
            if enough and probing:
                return
            time.sleep(0.02)
        last = (self.writer.errors[-1][1] if self.writer and self.writer.errors else
                self.probe.results[-1].error if self.probe and self.probe.results else "nothing recorded")
        raise LoadTimeout(f"no steady state within {timeout:g} s: {last}",
                          "check that the service accepts writes and probes (drillbook lab status, for the lab)")

    def wait_for_write_after(self, at: float, timeout: float = 60.0, not_on: str | None = None) -> Ack:
        """Block until a write is acknowledged after ``at`` by a node other than the one before it."""
        old = not_on if not_on is not None else node_before(self.acks, at)
        deadline = clock() + timeout
        while clock() < deadline:
            ack = first_write_after(self.acks, at, not_on=old)
            if ack is not None:
                return ack
            time.sleep(0.01)
        errors = self.writer.errors[-1][1] if self.writer and self.writer.errors else "no error recorded"
        raise LoadTimeout(f"no write acknowledged within {timeout:g} s of the fault (last error: {errors})",
                          "no node accepted writes after the fault: read the recovery's output above")

    def present(self, conn: DbConnection) -> set[int]:
        """Which of this run's sequence numbers the database holds now."""
        rows = conn.execute(f"SELECT seq FROM {WRITES_TABLE} WHERE run = %s", (self.run,)).fetchall()
        return {int(r[0]) for r in rows}

    def outcome(self, fault_at: float, conn: DbConnection, old_node: str | None = None) -> Outcome:
        """RTO, RPO and probe failures of the fault at ``fault_at``, checked against ``conn`` (the new primary)."""
        acks, probes = self.acks, self.probes
        old = old_node if old_node is not None else node_before(acks, fault_at)
        loss = rpo(acks, self.present(conn), fault_at)
        first = first_write_after(acks, fault_at, not_on=old)
        return Outcome(
            rto_seconds=rto(acks, fault_at, old), rpo_writes=loss.writes, rpo_seconds=loss.seconds,
            failed_probes=failed_probes(probes), longest_outage_seconds=longest_outage(probes),
            probes=len(probes), writes=len(acks), probe_resolution_seconds=probe_resolution(probes),
            new_node=first.node if first else None,
            write_latency_ms={k: round(v * 1000, 2) for k, v in
                              percentiles(self.writer.latencies if self.writer else []).items()},
        )

    def purge(self, conn: DbConnection) -> int:
        """Delete this run's rows from the writes table (the lab stays small)."""
        return conn.execute(f"DELETE FROM {WRITES_TABLE} WHERE run = %s", (self.run,)).rowcount


def ensure_table(conn: DbConnection) -> None:
    """Create the writes table where the lab has not (other environments): needs CREATE rights."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS drillbook")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (run text NOT NULL, seq bigint NOT NULL, "
                 "written_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, seq))")


def _node(conn: DbConnection) -> str:
    info = getattr(conn, "info", None)
    return f"{getattr(info, 'host', '?')}:{getattr(info, 'port', '?')}" if info is not None else "?"


def _close(conn: DbConnection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # closing a connection to a dead server must not kill the thread
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
