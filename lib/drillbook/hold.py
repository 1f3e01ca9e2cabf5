"""A child run held at its first step: both sides of it.

A drill that measures a recovery starts its runbook *before* the fault (``runner.held``): the
runbook's kernel starts, imports, loads the environment and connects, then its first
``drill.step`` waits here until the drill releases it, right after the fault. What the drill's
clock counts after the fault is then detection and the runbook's own steps, not the tool's start.

The runner creates ``HOLD`` in the child's private run folder before its kernel starts; the kernel
writes ``HOLDING`` when it reaches its first step, and goes on once ``HOLD`` is gone.
"""
from __future__ import annotations

import time
from pathlib import Path

from .errors import DrillbookError

HOLD = "hold"  # exists while the child must wait at its first step
HOLDING = "holding"  # the child's kernel waits at its first step
POLL_SECONDS = 0.002  # the release's own latency: at most this (a stat call each time)


class HoldTimeout(DrillbookError):
    """A held child was never released (its drill ended without running it)."""


def wait_if_held(run_dir: Path | None, timeout: float = 3600.0) -> bool:
    """Kernel side, at every step: if this run is held, wait until released; True if it was."""
    if run_dir is None or not (run_dir / HOLD).exists():
        return False
    wait_released(run_dir, timeout)
    return True


def wait_released(run_dir: Path, timeout: float) -> float:
    """Kernel side: say we are holding, then wait until released. Returns seconds held."""
    (run_dir / HOLDING).touch()
    t0 = time.monotonic()
    while (run_dir / HOLD).exists():
        if time.monotonic() - t0 > timeout:
            raise HoldTimeout(f"held at the first step for {timeout:g} s and never released",
                              "the drill that started this runbook did not run it: read the drill's evidence")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - t0
