"""The load's refusals and time-outs are DrillbookErrors with a hint, also across the isolated load's process."""
from __future__ import annotations

import os
import signal
import time

import pytest
from drillbook.errors import DrillbookError, LoadProcessError, LoadTimeout, MeasureError, ProbeIntervalError
from drillbook.measure.isolated import IsolatedLoad
from drillbook.measure.load import Load, Probe


def refused() -> None:
    raise ConnectionRefusedError("connection refused")


def test_probe_interval_above_50ms_is_bad_input_with_a_hint() -> None:
    with pytest.raises(ProbeIntervalError) as caught:
        Probe(refused, interval=0.1)
    assert isinstance(caught.value, MeasureError) and isinstance(caught.value, DrillbookError)
    assert caught.value.exit_code == 2
    assert "50 ms" in caught.value.message and "probe_interval" in caught.value.hint


def test_wait_steady_timeout_is_a_measure_error_with_a_hint() -> None:
    load = Load(writer=refused, probe=None, run="errors-1").start()
    try:
        with pytest.raises(LoadTimeout) as caught:
            load.wait_steady(timeout=0.2)
    finally:
        load.stop()
    assert isinstance(caught.value, MeasureError)
    assert "connection refused" in caught.value.message and caught.value.hint


def test_isolated_load_raises_the_processes_error_with_its_hint() -> None:
    # ``int`` is a picklable connector; the interval is refused in the load's process, before any call.
    load = IsolatedLoad(writer=None, probe=int, run="errors-2", probe_interval=0.1)
    try:
        with pytest.raises(ProbeIntervalError) as caught:
            load.start()
    finally:
        load.stop()
    assert "probe_interval" in caught.value.hint


def test_isolated_load_whose_process_died_is_a_measure_error() -> None:
    load = IsolatedLoad(writer=None, probe=int, run="errors-3", probe_interval=0.05).start()
    try:
        os.kill(load._process.pid, signal.SIGKILL)  # the process this test started
        load._process.wait(timeout=10)
        deadline = time.monotonic() + 5
        with pytest.raises(LoadProcessError) as caught:
            while time.monotonic() < deadline:  # state() asks the process again every 5 ms at most
                load.state()
        assert caught.value.hint and "stderr" in caught.value.hint
    finally:
        load.stop()
