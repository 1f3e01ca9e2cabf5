"""Stop conditions (as AWS FIS and SSM have them): bounds on what a drill's probes see while a
fault is active. The first one crossed heals the faults at once, stops the run (the cell in
progress is interrupted, the remaining steps are skipped) and the run ends ``failed``, naming it.

    watch = stops.Watch(drill, [stops.ProbesFailing(load, seconds=5),
                                stops.Outage(load, rto_factor=2, rto_seconds=drill.env.objectives["rto_seconds"]),
                                stops.LagAbove(lambda: pg.replication.lag("pg2").bytes, 256 << 20, "pg2")],
                        faults=[active]).start()
    drill.cleanup(watch.stop, "stop watching the stop conditions", mutating=False)

Each condition reads its own source (the load's probes, a lag function) and says why it is
crossed, or None. ``Watch`` polls them in a thread of its own: when one is crossed it heals every
fault it guards, then calls ``drill.stop(reason)``.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from ..measure.compute import ProbeResult
from .base import Active

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

Clock = Callable[[], float]


class StopCondition(Protocol):
    def describe(self) -> str: ...

    def crossed(self, now: float) -> str | None: ...


class ProbeSource(Protocol):
    """What the conditions read of a load (``measure.load.Load`` or ``IsolatedLoad``)."""

    @property
    def probes(self) -> list[ProbeResult]: ...


def failing_for(probes: Sequence[ProbeResult], now: float) -> float:
    """Seconds the probe has been failing without a pass in between, up to ``now`` (0 if the
    latest finished probe passed). Measured from the end of the last passing probe."""
    done = sorted((p for p in probes if p.ended <= now), key=lambda p: p.started)
    if not done or done[-1].ok:
        return 0.0
    passing = [p for p in done if p.ok]
    since = passing[-1].ended if passing else done[0].started
    return max(0.0, now - since)


class ProbesFailing:
    """Failed probes for longer than ``seconds`` in a row."""

    def __init__(self, load: ProbeSource, seconds: float) -> None:
        self.load, self.seconds = load, seconds

    def describe(self) -> str:
        return f"probes failing for more than {self.seconds:g} s"

    def crossed(self, now: float) -> str | None:
        failing = failing_for(self.load.probes, now)
        return f"probes failing for {failing:.1f} s (bound {self.seconds:g} s)" if failing > self.seconds else None


class Outage:
    """An outage longer than ``rto_factor`` × the RTO objective."""

    def __init__(self, load: ProbeSource, rto_factor: float, rto_seconds: float) -> None:
        self.load, self.factor, self.rto = load, rto_factor, rto_seconds

    def describe(self) -> str:
        return f"an outage longer than {self.factor:g} × the RTO objective ({self.factor * self.rto:g} s)"

    def crossed(self, now: float) -> str | None:
        failing = failing_for(self.load.probes, now)
        limit = self.factor * self.rto
        return (f"outage of {failing:.1f} s, longer than {self.factor:g} × rto_seconds ({limit:g} s)"
                if failing > limit else None)


class LagAbove:
    """Replication lag of ``node`` above ``limit_bytes`` (``lag`` returns bytes, or None if unknown)."""

    def __init__(self, lag: Callable[[], int | None], limit_bytes: int, node: str) -> None:
        self.lag, self.limit, self.node = lag, limit_bytes, node

    def describe(self) -> str:
        return f"replication lag of {self.node} above {self.limit} bytes"

    def crossed(self, now: float) -> str | None:
        try:
            behind = self.lag()
        except Exception:  # the node cannot be asked right now: the probes' conditions cover outages
            return None
        return f"replication lag of {self.node} is {behind} bytes (bound {self.limit})" \
            if behind is not None and behind > self.limit else None


class Watch:
    """Polls ``conditions`` every ``interval`` s; the first crossed heals ``faults`` and stops ``drill``."""

    def __init__(self, drill: Drill, conditions: Sequence[StopCondition], faults: Sequence[Active | None] = (),
                 interval: float = 0.1, clock: Clock = time.monotonic) -> None:
        self.drill, self.conditions = drill, list(conditions)
        self.faults = [f for f in faults if f is not None]
        self.interval, self.clock = interval, clock
        self.reason: str | None = None
        self.errors: list[str] = []  # heals that failed, conditions that could not be read
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drillbook-stop-conditions", daemon=True)

    def guard(self, active: Active | None) -> None:
        """Also heal ``active`` (a fault injected after the watch started) when a condition is crossed."""
        if active is not None:
            self.faults.append(active)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> str:
        self._halt.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)
        return f"stopped by {self.reason}" if self.reason else "no stop condition was crossed"

    def poll(self) -> str | None:
        """Check every condition once; on the first crossed, act on it. Returns its reason."""
        now = self.clock()
        for condition in self.conditions:
            why = condition.crossed(now)
            if why:
                self._cross(why)
                return why
        return None

    def _cross(self, why: str) -> None:
        self.reason = why
        self._halt.set()
        for active in self.faults:  # heal first: every moment past the bound is harm done
            try:
                active.heal()
            except Exception as exc:  # the cleanup tries again; say so in the reason
                self.errors.append(f"{active.fault.title}: {type(exc).__name__}: {exc}")
        self.drill.stop(f"stop condition crossed: {why}")

    def _run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                if self.poll():
                    return
            except Exception as exc:  # a condition that cannot be read must not kill the watch
                self.errors.append(f"{type(exc).__name__}: {exc}")
