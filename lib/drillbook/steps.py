"""One step of a run, from its journal entry to its line on screen.

``Drill.step`` decides nothing here: it hands the run (a :class:`StepRun`) and the step's
declaration to :func:`run_step`, which journals the step as it starts, prints the dry-run plan of a
mutating step instead of running it, passes its gate, runs it, and records how it ended.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from . import gates, hold, journal, kernel, resuming
from .evidence.record import RUNNING, Journal, Step

if TYPE_CHECKING:  # annotations only
    from pathlib import Path

T = TypeVar("T")


class StepRun(gates.Gated, Protocol):
    """The parts of a run a step needs (a ``Drill``)."""

    dry_run: bool
    run_dir: Path | None
    data: Journal

    @property
    def attended(self) -> bool: ...  # a person watches in a notebook: errors show as one line

    def _save(self) -> None: ...

    def _say(self, text: str) -> None: ...

    def _require_change(self, title: str) -> None: ...


def run_step(run: StepRun, title: str, fn: Callable[[], T], mutating: bool, gate: str | None,
             plan: str | None, confirm: str | None) -> T | None:
    """Run ``fn`` as the step ``title`` of ``run`` (see ``Drill.step``)."""
    if hold.wait_if_held(run.run_dir):  # started ahead by its drill (runner.held): held until the fault
        run.data["started_at"] = journal.now_iso()  # the run's own time starts now
    record: Step = {"title": title, "mutating": mutating, "gate": gate, "started_at": journal.now_iso(),
                    "status": RUNNING}
    run.data["steps"].append(record)
    t0 = time.monotonic()
    what = plan or (fn.__doc__ or "").strip() or title
    if mutating and run.dry_run:
        record.update(status="dry-run", detail=f"would: {what}", ended_at=journal.now_iso(), seconds=0.0)
        run._save()
        run._say(f"○ {title} — DRY RUN, would: {what}" + (f" (after gate {gate!r})" if gate else ""))
        return None
    try:
        if mutating:
            run._require_change(title)
        if gate:
            gates.pass_gate(run, gate, title, confirm)
        run._say(f"▶ {title}")
        run._save()
        result = fn()
    except BaseException as exc:
        _failed(run, record, exc, t0)
        raise
    _passed(run, record, result, t0)
    return result


def _failed(run: StepRun, record: Step, exc: BaseException, t0: float) -> None:
    record.update(status="failed", detail=f"{type(exc).__name__}: {exc}",
                  ended_at=journal.now_iso(), seconds=round(time.monotonic() - t0, 3))
    run._save()
    if run.attended:  # a person sees one line; the evidence keeps the traceback
        title = record["title"]
        kernel.one_line(exc, f"step {title!r} {'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}")


def _passed(run: StepRun, record: Step, result: Any, t0: float) -> None:
    record.update(status="passed", ended_at=journal.now_iso(), seconds=round(time.monotonic() - t0, 3))
    resuming.keep(record, result)  # a later resume may hand this value on
    if isinstance(result, (str, int, float, bool)) and result is not None:
        record["detail"] = str(result)
    run._save()
    shown = isinstance(result, (int, float)) or (isinstance(result, str) and len(result) <= 120 and "\n" not in result)
    run._say(f"✓ {record['title']} ({record['seconds']:.2f} s)" + (f": {result}" if shown else ""))
    kernel.quiet(result if shown else None)  # on the line above: never echoed bare under the cell


def not_applicable(run: StepRun, title: str, reason: str) -> None:
    """Record a step that cannot apply here (e.g. no SSH host), with the reason. Never a pass."""
    now = journal.now_iso()
    run.data["steps"].append({"title": title, "mutating": False, "gate": None, "started_at": now,
                              "ended_at": now, "seconds": 0.0, "status": "not-applicable", "detail": reason})
    run._save()
    run._say(f"– {title} — not applicable: {reason}")
