"""Latency percentiles by phase (before, during, after a fault) and the objectives that judge them."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from drillbook.measure.compute import Ack, ProbeResult
from drillbook.measure.phases import (
    LatencyMeasure,
    Sample,
    latency_measures,
    objective_for,
    phase_of,
    probe_samples,
    split,
    write_samples,
)
from drillbook.procedures.steady import record_latency


def test_phases_split_at_the_fault_and_at_the_recovery() -> None:
    assert [phase_of(t, 10.0, 12.0) for t in (9.99, 10.0, 11.9, 12.0, 30.0)] == \
        ["before", "during", "during", "after", "after"]
    assert phase_of(99.0, 10.0, None) == "during"  # never recovered: everything after the fault is "during"
    got = split([Sample(1, 0.001), Sample(10.5, 0.5), Sample(13, 0.002), Sample(2, 0.003)], 10.0, 12.0)
    assert got == {"before": [0.001, 0.003], "during": [0.5], "after": [0.002]}
    assert split([], 1.0, 2.0) == {"before": [], "during": [], "after": []}
    with pytest.raises(ValueError, match="precedes the fault"):
        split([], 5.0, 4.0)


def test_samples_come_from_successful_probes_and_acknowledged_writes() -> None:
    probes = [ProbeResult(1.0, 1.004, True), ProbeResult(2.0, 3.0, False, "refused"), ProbeResult(4.0, 4.01, True)]
    assert [(s.at, round(s.seconds, 6)) for s in probe_samples(probes)] == [(1.0, 0.004), (4.0, 0.01)]
    # A write is placed in its phase by when it started (acknowledged at `at`, after `latency` seconds).
    writes = write_samples([Ack(1, 10.02, "n"), Ack(2, 20.5, "n")], [0.02, 0.5])
    assert writes == [Sample(10.0, 0.02), Sample(20.0, 0.5)]


def test_measures_are_nearest_rank_percentiles_in_ms_per_kind_and_phase() -> None:
    before = [Sample(i, (i + 1) / 1000) for i in range(100)]  # 1 … 100 ms
    during = [Sample(150, 0.9)]
    found = latency_measures({"probe": before + during, "write": []}, fault_at=100.0, recovered_at=200.0)
    by_name = {m.name: m for m in found}
    assert list(by_name) == ["probe_latency_p50_ms_before", "probe_latency_p95_ms_before", "probe_latency_p99_ms_before",
                             "probe_latency_p50_ms_during", "probe_latency_p95_ms_during", "probe_latency_p99_ms_during"]
    assert [by_name[f"probe_latency_p{p}_ms_before"].value_ms for p in (50, 95, 99)] == [50.0, 95.0, 99.0]
    assert by_name["probe_latency_p99_ms_during"].value_ms == 900.0 and by_name["probe_latency_p50_ms_during"].samples == 1
    assert not [m for m in found if m.phase == "after" or m.kind == "write"]  # no sample, no claim


def test_objectives_judge_the_steady_phases_the_most_specific_first() -> None:
    def m(kind: str, point: str, phase: str) -> LatencyMeasure:
        return LatencyMeasure(kind, point, phase, 1.0, 1)

    objectives = {"p95_ms": 50.0, "write_p95_ms": 20.0, "rto_seconds": 30.0}
    assert objective_for(m("write", "p95", "before"), objectives) == "write_p95_ms"
    assert objective_for(m("probe", "p95", "after"), objectives) == "p95_ms"
    assert objective_for(m("probe", "p95", "during"), objectives) is None  # the fault's doing, not judged
    assert objective_for(m("probe", "p50", "before"), objectives) is None


def test_record_latency_measures_each_phase_against_the_environment() -> None:
    recorded: list[tuple[str, float, str | None]] = []
    drill = SimpleNamespace(env=SimpleNamespace(objectives={"probe_p99_ms": 5.0}),
                            measure=lambda name, value, unit, objective, detail: recorded.append((name, value, objective)))
    load = SimpleNamespace(acks=[Ack(1, 0.51, "n"), Ack(2, 3.02, "n")],
                           writer=SimpleNamespace(latencies=[0.01, 0.02]),
                           probes=[ProbeResult(0.2, 0.203, True), ProbeResult(1.5, 1.6, True), ProbeResult(2.5, 2.501, True)])
    record_latency(drill, load, fault_at=1.0, recovered_at=2.0)
    got = {name: (value, objective) for name, value, objective in recorded}
    assert got["probe_latency_p99_ms_before"] == (3.0, "probe_p99_ms")
    assert got["probe_latency_p50_ms_during"] == (100.0, None)
    assert got["probe_latency_p95_ms_after"] == (1.0, None)
    assert got["write_latency_p50_ms_before"] == (10.0, None) and got["write_latency_p50_ms_after"] == (20.0, None)
    assert "write_latency_p50_ms_during" not in got


def test_history_charts_the_latency_measures_of_real_runs() -> None:
    from drillbook.site import charts
    from drillbook.site.data import Measure, RunSummary

    def summary(seq: int, finished: str, dry: bool, measures: dict[str, float]) -> RunSummary:
        ms = tuple(Measure(name, value, "ms", None, None, "recorded") for name, value in measures.items())
        return RunSummary(seq, f"r{seq}", "cold-start", "local", "drill", "Cold start", "passed", None, None, finished,
                          dry, (), {}, ms, True, True)

    runs = [summary(1, "2026-12-01T10:00:00Z", False, {"probe_latency_p95_ms_before": 12.0, "rto_seconds": 1.5,
                                                       "write_latency_p50_ms_after": 2.0}),
            summary(2, "2026-12-01T11:00:00Z", True, {"probe_latency_p95_ms_before": 99.0}),  # dry run: not charted
            summary(3, "2026-12-01T12:00:00Z", False, {"probe_latency_p95_ms_before": 14.0,
                                                       "probe_latency_p99_ms_during": 300.0})]
    series = charts.latency_series(runs)
    assert sorted(series) == ["probe before", "probe during", "write after"]
    assert [v for _, v in series["probe before"]["p95"]] == [12.0, 14.0]
    assert list(series["probe during"]) == ["p99"] and charts.latency_series(runs[1:2]) == {}
    assert charts.render_latency(series).startswith(b"\x89PNG")
