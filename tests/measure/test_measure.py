"""RTO/RPO/probe computations on recorded data, and the writer/probe threads against fake connections."""
from __future__ import annotations

import threading
import time

import pytest
from drillbook.measure.compute import (
    Ack,
    ProbeResult,
    Rpo,
    failed_probes,
    first_write_after,
    longest_outage,
    node_before,
    percentiles,
    probe_resolution,
    rpo,
    rto,
)
from drillbook.measure.load import Load, Probe, clock

OLD, NEW = "127.0.0.1:1", "127.0.0.1:2"


def acks(*rows: tuple[int, float, str]) -> list[Ack]:
    return [Ack(seq, at, node) for seq, at, node in rows]


# ----------------------------------------------------------------------------- RTO
def test_rto_is_fault_to_first_write_on_another_node() -> None:
    log = acks((1, 9.0, OLD), (2, 9.5, OLD), (3, 10.02, OLD), (4, 12.25, NEW), (5, 12.3, NEW))
    # seq 3 was acknowledged by the old primary after the fault mark: it is not recovery.
    assert rto(log, fault_at=10.0) == pytest.approx(2.25)
    assert first_write_after(log, 10.0, not_on=OLD).seq == 4


def test_rto_with_explicit_old_node_and_none_when_never_recovered() -> None:
    log = acks((1, 9.0, OLD), (2, 11.0, OLD))
    assert rto(log, fault_at=10.0) is None  # only the old node answered again
    assert rto(log, fault_at=10.0, old_node=NEW) == pytest.approx(1.0)
    assert rto([], fault_at=10.0) is None


def test_node_before_picks_the_last_acknowledger() -> None:
    log = acks((1, 1.0, NEW), (2, 2.0, OLD), (3, 5.0, NEW))
    assert node_before(log, 3.0) == OLD
    assert node_before(log, 0.5) is None


# ----------------------------------------------------------------------------- RPO
def test_rpo_counts_acknowledged_writes_missing_and_how_long_before_the_fault() -> None:
    log = acks((1, 8.0, OLD), (2, 9.0, OLD), (3, 9.4, OLD), (4, 9.9, OLD), (5, 12.0, NEW))
    loss = rpo(log, present={1, 2, 5}, fault_at=10.0)
    assert loss.writes == 2 and loss.missing == (3, 4)
    assert loss.seconds == pytest.approx(0.6)  # first missing write (9.4) → fault (10.0)


def test_rpo_zero_when_nothing_is_missing_and_never_negative() -> None:
    log = acks((1, 8.0, OLD), (2, 10.5, OLD))
    assert rpo(log, present={1, 2}, fault_at=10.0) == Rpo(0, 0.0)
    late = rpo(log, present={1}, fault_at=10.0)  # lost write acknowledged after the mark
    assert late.writes == 1 and late.seconds == 0.0


# ----------------------------------------------------------------------------- probes
def probes(*rows: tuple[float, bool]) -> list[ProbeResult]:
    return [ProbeResult(start, start + 0.01, ok) for start, ok in rows]


def test_failed_probes_in_a_window() -> None:
    run = probes((0.0, True), (0.05, False), (0.10, False), (0.15, True), (0.20, False))
    assert failed_probes(run) == 3
    assert failed_probes(run, start=0.06, end=0.16) == 1
    assert failed_probes(probes((0.0, True))) == 0


def test_longest_outage_spans_from_first_failure_to_next_success() -> None:
    run = probes((0.0, True), (0.05, False), (0.10, False), (0.15, True), (0.30, False), (0.35, True))
    assert longest_outage(run) == pytest.approx(0.11)  # 0.05 → 0.16 (end of the passing probe)
    assert longest_outage(probes((0.0, False), (0.5, False))) == pytest.approx(0.51)  # never recovered
    assert longest_outage([]) == 0.0


def test_probe_resolution_is_the_largest_gap() -> None:
    assert probe_resolution(probes((0.0, True), (0.05, True), (0.12, True))) == pytest.approx(0.07)
    assert probe_resolution(probes((1.0, True))) == 0.0


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([3.0]) == {"p50": 3.0, "p95": 3.0, "p99": 3.0}
    assert percentiles([]) == {}


# ----------------------------------------------------------------------------- threads, with fakes
class FakeServer:
    """Stands in for a database whose primary is 'down' between two instants."""

    def __init__(self) -> None:
        self.rows: dict[str, set[int]] = {}
        self.down = threading.Event()
        self.port = 1

    def connect(self) -> FakeConn:
        if self.down.is_set():
            raise ConnectionRefusedError("connection refused")
        return FakeConn(self, self.port)


class FakeConn:
    def __init__(self, server: FakeServer, port: int) -> None:
        self.server, self.info = server, type("Info", (), {"host": "127.0.0.1", "port": port})()

    def execute(self, query: str, params: tuple = ()) -> FakeConn:
        if self.server.down.is_set() or self.info.port != self.server.port:
            raise OSError("server closed the connection unexpectedly")
        if query.startswith("INSERT"):
            self.server.rows.setdefault(params[0], set()).add(params[1])
        self._rows = [(s,) for s in sorted(self.server.rows.get(params[0], ()))] if query.startswith("SELECT seq") else []
        return self

    def fetchall(self) -> list[tuple]:
        return self._rows

    def close(self) -> None:
        pass


def test_load_measures_a_simulated_failover() -> None:
    server = FakeServer()
    load = Load(writer=server.connect, probe=server.connect, run="r1", probe_interval=0.01,
                write_interval=0.002).start()
    load.wait_steady(writes=5, timeout=5)
    fault = load.mark("fault")
    server.down.set()
    time.sleep(0.2)
    server.port = 2  # the "new primary"
    server.down.clear()
    ack = load.wait_for_write_after(fault, timeout=5)
    load.stop()
    assert ack.node == "127.0.0.1:2"
    outcome = load.outcome(fault, FakeConn(server, 2))
    assert 0.2 <= outcome.rto_seconds < 1.5
    assert outcome.rpo_writes == 0  # the fake loses nothing it acknowledged
    assert outcome.failed_probes >= 5 and outcome.longest_outage_seconds >= 0.15
    assert outcome.probe_resolution_seconds < 0.05
    assert outcome.new_node == "127.0.0.1:2" and outcome.writes == len(load.acks)
    seqs = [a.seq for a in load.acks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_rpo_sees_writes_the_new_primary_lacks() -> None:
    server = FakeServer()
    load = Load(writer=server.connect, probe=None, run="r2", write_interval=0.002).start()
    load.wait_steady(writes=20, timeout=5)
    load.stop()
    fault = clock()
    lost = {a.seq for a in load.acks[-3:]}
    server.rows["r2"] -= lost  # as if the last three never reached the standby
    outcome = load.outcome(fault, FakeConn(server, server.port))
    assert outcome.rpo_writes == 3 and outcome.rpo_seconds > 0


def test_probe_interval_above_50ms_is_refused() -> None:
    with pytest.raises(ValueError, match="50 ms"):
        Probe(lambda: None, interval=0.1)


def test_wait_steady_times_out_with_the_last_error() -> None:
    server = FakeServer()
    server.down.set()
    load = Load(writer=server.connect, probe=None, run="r3").start()
    try:
        with pytest.raises(TimeoutError, match="connection refused"):
            load.wait_steady(timeout=0.3)
    finally:
        load.stop()
