"""Stop conditions: what counts as crossed, and what crossing does (heal first, then stop the run).

Pure parts with recorded probe results; the ``Watch`` with a fake drill; ``Drill.stop`` with a
real drill in-process, interrupted from the watch's thread as a kernel's cell would be.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import drillbook
import pytest
from drillbook.errors import CheckFailed, StopConditionCrossed
from drillbook.faults import stops
from drillbook.faults.base import Active
from drillbook.measure.compute import ProbeResult
from fakeshell import FakeShell

pytestmark = pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")


def probes(*spec: tuple[float, bool]) -> list[ProbeResult]:
    return [ProbeResult(started=t, ended=t + 0.01, ok=ok) for t, ok in spec]


class Load:
    def __init__(self, results: list[ProbeResult]) -> None:
        self.probes = results


def test_failing_for_counts_from_the_last_passing_probe() -> None:
    seen = probes((0, True), (1, True), (2, False), (3, False))
    assert stops.failing_for(seen, 4.0) == pytest.approx(4.0 - 1.01)
    assert stops.failing_for(seen + probes((3.5, True)), 4.0) == 0.0
    assert stops.failing_for(probes((0, False)), 2.0) == 2.0  # never passed: since the first attempt
    assert stops.failing_for(seen, 2.005) == 0.0  # a probe still running does not count yet
    assert stops.failing_for([], 10) == 0.0


def test_each_condition_says_why_it_is_crossed() -> None:
    load = Load(probes((0, True), (1, False), (5, False)))
    assert stops.ProbesFailing(load, 3).crossed(5.5).startswith("probes failing for 5.5 s")
    assert stops.ProbesFailing(load, 6).crossed(5.5) is None
    assert "longer than 2 × rto_seconds (4 s)" in stops.Outage(load, 2, 2).crossed(5.5)
    assert stops.Outage(load, 2, 30).crossed(5.5) is None
    assert stops.LagAbove(lambda: 2048, 1024, "pg2").crossed(0) == "replication lag of pg2 is 2048 bytes (bound 1024)"
    assert stops.LagAbove(lambda: None, 1024, "pg2").crossed(0) is None

    def unreachable() -> int:
        raise OSError("down")
    assert stops.LagAbove(unreachable, 1, "pg2").crossed(0) is None


class FakeDrill:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def stop(self, reason: str) -> None:
        self.events.append(f"stop: {reason}")


class Fault:
    title = "fault"

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def heal(self, shell: FakeShell) -> str:
        self.events.append("heal")
        return "healed"


def test_crossing_heals_every_fault_before_it_stops_the_run() -> None:
    events: list[str] = []
    active = Active(Fault(events), FakeShell())  # type: ignore[arg-type]
    active.injected = True
    load = Load(probes((0, True)))
    watch = stops.Watch(FakeDrill(events), [stops.ProbesFailing(load, 1)], clock=lambda: 10.0)
    watch.guard(active)
    assert watch.poll() is None  # the latest probe passed
    load.probes += probes((5, False))
    assert watch.poll().startswith("probes failing")
    assert events == ["heal", f"stop: stop condition crossed: {watch.reason}"]
    assert active.heal() == "already healed"  # the cleanup that follows does nothing more


def test_the_watch_thread_stops_by_itself_once_crossed() -> None:
    events: list[str] = []
    load = Load(probes((0, False)))
    watch = stops.Watch(FakeDrill(events), [stops.ProbesFailing(load, 0.5)], interval=0.01,
                        clock=time.monotonic).start()
    load.probes = probes((time.monotonic() - 2, False))
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events and events[0].startswith("stop: stop condition crossed: probes failing")
    assert watch.stop().startswith("stopped by probes failing")


# ----------------------------------------------------------------------------- Drill.stop


@pytest.fixture
def cell_running() -> Iterator[None]:
    """SIGINT handled as while a kernel runs a cell (ipykernel installs default_int_handler then), whatever
    this process inherited: a background job of a non-interactive shell starts with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_stop_interrupts_the_step_skips_the_rest_and_fails_the_run(run_dir: Path, cell_running: None) -> None:
    drill = drillbook.start(env="local", dry_run=False)
    healed: list[str] = []
    drill.cleanup(lambda: healed.append("cleanup"), "heal")

    def stall() -> None:  # a runbook that hangs: only the stop ends it
        threading.Timer(0.05, drill.stop, args=("stop condition crossed: probes failing for 9 s",)).start()
        time.sleep(60)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        drill.step("Run the runbook", stall)
    assert time.monotonic() - started < 30  # interrupted, not waited out
    with pytest.raises(StopConditionCrossed):
        drill.step("Verify", lambda: None)  # what a person running the next cell would get
    drill.fail(KeyboardInterrupt())  # the kernel's cell hook
    record = json.loads((run_dir / "journal.json").read_text())
    assert record["status"] == "failed" and record["reason"] == "stop condition crossed: probes failing for 9 s"
    assert [s["title"] for s in record["steps"]] == ["Run the runbook"]
    assert {"name": "no stop condition crossed", "passed": False} == {
        k: record["checks"][-1][k] for k in ("name", "passed")}
    assert healed == ["cleanup"] and isinstance(StopConditionCrossed("x"), CheckFailed)


def test_a_stop_while_no_cell_runs_fails_the_run_at_finish(run_dir: Path) -> None:
    drill = drillbook.start(env="local", dry_run=False)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # an idle kernel ignores SIGINT
    try:
        drill.stop("stop condition crossed: lag")
    finally:
        signal.signal(signal.SIGINT, previous)
    drill.check("measured", True)
    with pytest.raises(CheckFailed, match="lag"):
        drill.finish()
