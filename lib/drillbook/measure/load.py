"""The background load that measures recovery: a sequenced writer and an availability probe.

    from drillbook import measure
    load = measure.Load(writer=pg.connector(), probe=pg.connector(), run=drill.run_id)
    load.start()
    load.wait_steady()                        # writes acknowledged and probes passing before the fault
    fault = load.mark("fault"); pg.stop(old)  # the clock of every measure is time.monotonic()
    ...                                       # recover (e.g. run the failover runbook)
    load.wait_for_write_after(fault)          # the first write the new primary acknowledges
    load.stop()
    with pg.connect() as conn:
        outcome = load.outcome(fault, conn)   # RTO, RPO (writes and seconds), failed probes
        load.purge(conn)

* The writer inserts (run, seq) rows into ``drillbook.writes`` (the lab creates it; elsewhere
  ``ensure_table(conn)``) through whatever node accepts
  writes — its connector decides (``pg.connector()`` lists every node with
  ``target_session_attrs=read-write``) — and records each acknowledged seq with its time and node.
  After an error it reconnects every ``retry_interval`` (20 ms) until a primary answers: that
  interval (plus a connection's set-up, ~5 ms with TLS) is the resolution of the measured RTO.
* The probe opens a new connection and runs ``SELECT 1`` every ``interval`` (≤ 50 ms, start to
  start), recording success or failure: availability, and credentials that still work.
* RTO = fault → first write acknowledged by another node than the one before the fault.
  RPO = acknowledged writes missing afterwards: how many, and seconds from the first missing one
  to the fault. Failed probes: attempts that failed (in a window, e.g. around a rotation).

In a drill kernel that also runs a runbook with papermill, use ``IsolatedLoad`` (same API, its
threads in a process of their own, the probe at a fixed rate) with ``pg.portable_connector()``:
threads sharing the kernel's GIL with papermill see stalls of tens of milliseconds.

The computations are plain functions over recorded data (``rto``, ``rpo``, ``failed_probes``,
``longest_outage``, ``probe_resolution``, ``percentiles``), tested without a database.
"""
from __future__ import annotations

import bisect
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Sequence

clock = time.monotonic  # one clock for faults, writes and probes
WRITES_TABLE = "drillbook.writes"
Connector = Callable[[], Any]  # returns a new DB-API/psycopg connection (autocommit)


@dataclass(frozen=True)
class Ack:
    seq: int
    at: float  # clock() when the commit was acknowledged
    node: str  # "address:port" of the server that acknowledged it


@dataclass(frozen=True)
class ProbeResult:
    started: float
    ended: float
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class Rpo:
    writes: int  # acknowledged writes missing afterwards
    seconds: float  # from the first missing write to the fault (0 when nothing is missing)
    missing: tuple[int, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a drill records about a fault: measures to compare with the environment's objectives."""

    rto_seconds: float | None  # None: no write was acknowledged after the fault
    rpo_writes: int
    rpo_seconds: float
    failed_probes: int
    longest_outage_seconds: float
    probes: int
    writes: int
    probe_resolution_seconds: float  # the largest gap between two probes: the measures' granularity
    new_node: str | None
    write_latency_ms: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- pure computations
def node_before(acks: Sequence[Ack], at: float) -> str | None:
    """The node that acknowledged the last write before ``at``."""
    before = [a for a in acks if a.at <= at]
    return before[-1].node if before else None


def first_write_after(acks: Sequence[Ack], at: float, not_on: str | None = None) -> Ack | None:
    """The first write acknowledged after ``at`` (by a node other than ``not_on``, if given)."""
    for ack in acks:
        if ack.at > at and (not_on is None or ack.node != not_on):
            return ack
    return None


def rto(acks: Sequence[Ack], fault_at: float, old_node: str | None = None) -> float | None:
    """Seconds from the fault to the first write acknowledged by the new primary.

    ``old_node`` defaults to the node that acknowledged the last write before the fault: a write
    the old primary still acknowledged after the fault was marked does not count as recovery.
    """
    old = old_node if old_node is not None else node_before(acks, fault_at)
    first = first_write_after(acks, fault_at, not_on=old)
    return None if first is None else round(first.at - fault_at, 4)


def rpo(acks: Iterable[Ack], present: set[int], fault_at: float) -> Rpo:
    """Acknowledged writes that are not ``present`` afterwards: how many, and how far before the fault."""
    missing = [a for a in acks if a.seq not in present]
    if not missing:
        return Rpo(0, 0.0)
    first = min(missing, key=lambda a: a.at)
    return Rpo(len(missing), round(max(0.0, fault_at - first.at), 4), tuple(a.seq for a in missing))


def failed_probes(probes: Iterable[ProbeResult], start: float | None = None, end: float | None = None) -> int:
    """Failed probe attempts that started within [start, end] (the whole run by default)."""
    return sum(1 for p in probes if not p.ok and (start is None or p.started >= start)
               and (end is None or p.started <= end))


def longest_outage(probes: Sequence[ProbeResult]) -> float:
    """The longest stretch from a failed probe's start to the next passing probe's end."""
    longest, since = 0.0, None
    for p in probes:
        if not p.ok and since is None:
            since = p.started
        elif p.ok and since is not None:
            longest = max(longest, p.ended - since)
            since = None
    if since is not None and probes:
        longest = max(longest, probes[-1].ended - since)
    return round(longest, 4)


def probe_resolution(probes: Sequence[ProbeResult]) -> float:
    """The largest gap between the starts of consecutive probes: nothing shorter can be seen."""
    starts = [p.started for p in probes]
    return round(max((b - a for a, b in zip(starts, starts[1:])), default=0.0), 4)


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles, e.g. {"p50": …, "p95": …, "p99": …}; empty input gives {}."""
    if not values:
        return {}
    ordered = sorted(values)
    result = {}
    for point in points:
        rank = max(1, -(-point * len(ordered) // 100))  # ceil(p/100 · n), at least the first
        result[f"p{point}"] = round(ordered[rank - 1], 4)
    return result


# ----------------------------------------------------------------------------- the threads
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
        conn = None
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

    def _connect(self) -> Any:
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
            raise ValueError("probe interval must be ≤ 50 ms, or it dominates the measured RTO")
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
        raise TimeoutError(f"no steady state within {timeout:g} s: {last}")

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
        raise TimeoutError(f"no write acknowledged within {timeout:g} s of the fault (last error: {errors})")

    def present(self, conn: Any) -> set[int]:
        """Which of this run's sequence numbers the database holds now."""
        rows = conn.execute(f"SELECT seq FROM {WRITES_TABLE} WHERE run = %s", (self.run,)).fetchall()
        return {int(r[0]) for r in rows}

    def outcome(self, fault_at: float, conn: Any, old_node: str | None = None) -> Outcome:
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

    def purge(self, conn: Any) -> int:
        """Delete this run's rows from the writes table (the lab stays small)."""
        return conn.execute(f"DELETE FROM {WRITES_TABLE} WHERE run = %s", (self.run,)).rowcount


class IsolatedLoad(Load):
    """The same writer and probe, run in a process of their own (a new Python interpreter).

    A drill kernel that executes a runbook with papermill keeps the GIL busy for tens of
    milliseconds at a time, and threads waiting for it would measure that, not the database:
    in their own process the writer's retries and the probe's schedule keep their resolution.
    The probe runs at a fixed rate (``probe_in_flight`` attempts at most at once). Connectors
    must be picklable (``Postgres.portable_connector``). Marks stay in this process: the
    monotonic clock is the system's, shared by both. Everything else reads as for ``Load``.
    """

    def __init__(self, writer: Connector | None, probe: Connector | None, run: str,
                 probe_interval: float = 0.05, write_interval: float = 0.01, probe_in_flight: int = 4) -> None:
        self.run = run
        self.marks = {}
        self._spec = (writer, probe, run, probe_interval, write_interval, probe_in_flight)
        self.writer = _Remote(self) if writer else None  # type: ignore[assignment]
        self.probe = _Remote(self) if probe else None  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._pipe: Any = None
        self._process: Any = None
        self._state: dict[str, list[Any]] = {"acks": [], "errors": [], "latencies": [], "probes": []}
        self._read_at = 0.0
        self._final = False

    def start(self) -> IsolatedLoad:
        # A fresh interpreter (not fork: a kernel runs threads; not multiprocessing's spawn: it
        # re-imports the caller's __main__), talking pickles over a socket pair.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from drillbook.measure import _serve_fd; _serve_fd(int(sys.argv[1]))",
             str(theirs.fileno())], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self._pipe = Connection(ours.detach())
        with self._lock:
            self._pipe.send(self._spec)
            self._receive()  # the threads run once the first state arrives
        self.marks["start"] = clock()
        return self

    def stop(self) -> None:
        with self._lock:
            if not self._final and self._pipe is not None:
                self._final = True
                try:
                    self._pipe.send("stop")
                    self._receive()
                finally:
                    self._pipe.close()
                    self._process.wait(timeout=10)
        self.marks.setdefault("stop", clock())

    def state(self) -> dict[str, list[Any]]:
        """What the load's process recorded so far (re-read at most every 5 ms; final after stop)."""
        with self._lock:
            if not self._final and self._pipe is not None and clock() - self._read_at > 0.005:
                self._pipe.send("state")
                self._receive()
            return self._state

    def _receive(self) -> None:
        try:
            answer = self._pipe.recv()
        except (EOFError, OSError):
            self._final = True
            raise RuntimeError("the load's process ended unexpectedly (see the kernel's stderr)") from None
        if isinstance(answer, BaseException):
            self._final = True
            raise answer
        self._state, self._read_at = answer, clock()


class _Remote:
    """This process's view of the writer or the probe of an ``IsolatedLoad``."""

    def __init__(self, load: IsolatedLoad) -> None:
        self._load = load

    acks = property(lambda self: self._load.state()["acks"])
    errors = property(lambda self: self._load.state()["errors"])
    latencies = property(lambda self: self._load.state()["latencies"])
    results = property(lambda self: self._load.state()["probes"])


def _serve_fd(fd: int) -> None:
    """Entry point of the isolated load's process: its parameters arrive on the socket ``fd``."""
    # This process is the load's alone: hand the GIL over often, so the probe's scheduler wakes
    # on time while other threads are busy setting up TLS connections.
    sys.setswitchinterval(0.0005)
    pipe = Connection(fd)
    _serve(pipe, *pipe.recv())


def _serve(pipe: Any, writer: Connector | None, probe: Connector | None, run: str, probe_interval: float,
           write_interval: float, probe_in_flight: int) -> None:
    """The isolated load's process: run the threads, answer "state" and "stop" until stopped."""
    try:
        load = Load(writer, probe, run, probe_interval, write_interval, probe_in_flight).start()
    except BaseException as exc:  # e.g. an interval above 50 ms: raised in the drill's kernel instead
        pipe.send(exc)
        return
    try:
        pipe.send(_recorded(load))
        while True:
            command = pipe.recv()
            if command == "stop":
                load.stop()
            pipe.send(_recorded(load))
            if command == "stop":
                return
    except (EOFError, OSError):  # the drill's kernel is gone: stop writing at once
        load.stop()


def _recorded(load: Load) -> dict[str, list[Any]]:
    return {"acks": load.acks, "errors": list(load.writer.errors) if load.writer else [],
            "latencies": list(load.writer.latencies) if load.writer else [], "probes": load.probes}


def ensure_table(conn: Any) -> None:
    """Create the writes table where the lab has not (other environments): needs CREATE rights."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS drillbook")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (run text NOT NULL, seq bigint NOT NULL, "
                 "written_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, seq))")


def _node(conn: Any) -> str:
    info = getattr(conn, "info", None)
    return f"{getattr(info, 'host', '?')}:{getattr(info, 'port', '?')}" if info is not None else "?"


def _close(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # closing a connection to a dead server must not kill the thread
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
