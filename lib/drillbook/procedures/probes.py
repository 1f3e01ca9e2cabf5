"""Probes across an incident drill: the first refusal after the fault, and the recovery's measures.

Shared by the incident drills (pool exhausted, cache down, slow query): a probe (``measure.load``,
usually an ``IsolatedLoad``) runs from before the fault to after the runbook; these read its attempts.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

from ..measure.compute import ProbeResult
from ..measure.load import clock

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

def wait_refused(load: Any, since: float, timeout: float = 20.0) -> ProbeResult | None:
    """The first probe started after ``since`` that failed (bounded poll), or None."""
    deadline = clock() + timeout
    while clock() < deadline:
        failed = next((p for p in load.probes if p.started >= since and not p.ok), None)
        if failed is not None:
            return failed
        time.sleep(0.05)
    return None


def served_at(probes: Sequence[ProbeResult], after: float) -> float | None:
    """When the first probe succeeded that ended after ``after`` (the runbook's start)."""
    return min((p.ended for p in probes if p.ok and p.ended >= after), default=None)


def record_recovery(drill: Drill, load: Any, fault_at: float, runbook_start: float, what: str) -> None:
    """Measure: time until new connections are served (from the fault, against ``rto_seconds``, and from
    the runbook's start) and the probes refused meanwhile."""
    probes = list(load.probes)
    served = served_at(probes, runbook_start)
    refused = [p for p in probes if p.started >= fault_at and not p.ok]
    drill.measure("refused_probes", len(refused), unit="probes",
                  detail=f"{len(refused)} of {sum(1 for p in probes if p.started >= fault_at)} probes {what} failed "
                         f"after the fault" + (f" (first error: {refused[0].error})" if refused else ""))
    drill.check(f"new connections {what} are served again", served is not None)
    if served is not None:
        drill.measure("served_after_fault_seconds", round(served - fault_at, 3), objective="rto_seconds",
                      detail=f"fault → first probe {what} served after the runbook started")
        drill.measure("served_after_runbook_seconds", round(served - runbook_start, 3),
                      detail="runbook start (kernel start included) → first probe served")
