"""Running a runbook from a drill, and telling an operator what to do next.

``run`` executes the runbook as a child run (``Drill.run_notebook``: papermill, same environment,
approvals and dry-run; its executed copy goes to the evidence's attachments) and copies its
checks and not-applicable steps into the drill's journal, so the drill's record shows what the
runbook proved. A runbook that errors stops the drill (``RunbookFailed``: status ``error``); one
that fails a check or an objective makes the drill ``failed`` but lets it measure and clean up.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..errors import DrillbookError
from ..journal import parse_iso

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


class RunbookFailed(DrillbookError):
    """A runbook a drill ran ended in error or was aborted: the recovery itself did not happen."""

    exit_code = 1


def hold(drill: Drill, name: str, parameters: dict[str, Any] | None = None) -> Any:
    """Start runbook ``name`` now, held at its first step (``Drill.hold_notebook``); pass it to
    ``run`` after the fault: the recovery then counts the runbook's steps, not its kernel's start."""
    held = drill.hold_notebook(name, parameters or {})
    print(f"runbook {name} started ahead, waiting at its first step ({held.wait_holding():.2f} s to get there)")
    return held


def run(drill: Drill, name: str, parameters: dict[str, Any] | None = None, load: Any = None,
        held: Any = None) -> dict[str, Any]:
    """Run runbook ``name`` as part of ``drill`` (or release ``held``, from ``hold``); adopt its
    checks; raise if it errored.

    With a ``load`` (``measure.load.Load``), the runbook's start and end are marked on its clock as
    ``"<name> start"`` and ``"<name> end"``, to measure what clients saw meanwhile.
    """
    if load is not None:
        load.mark(f"{name} start")
    try:
        child = held.result() if held is not None else drill.run_notebook(name, parameters or {})
    finally:
        if load is not None:
            load.mark(f"{name} end")
    for check in child["checks"]:
        drill.check(f"{name}: {check['name']}", check["passed"], check.get("detail", ""))
    for step in child["steps"]:
        if step["status"] == "not-applicable":
            drill.not_applicable(f"{name}: {step['title']}", step.get("detail", ""))
    reason = f" — {child['reason']}" if child.get("reason") else ""
    drill.check(f"runbook {name} passed", child["status"] == "passed",
                f"{child['status']}{reason}; executed copy: {child['notebook']}")
    if child["status"] in ("error", "aborted"):
        raise RunbookFailed(f"runbook {name} ended {child['status']}{reason}",
                            f"read its executed copy in the evidence bundle ({child['notebook']})")
    return child


def adopt_measures(drill: Drill, child: dict[str, Any], names: Iterable[str] | None = None) -> None:
    """Record the runbook's measures in the drill, against the same objectives."""
    wanted = set(names) if names is not None else None
    for m in child["measures"]:
        if wanted is None or m["name"] in wanted:
            drill.measure(m["name"], m["value"], unit=m.get("unit", "s"), objective=m.get("objective"),
                          better=m.get("better", "lower"), detail=(m.get("detail") or f"measured by {child['name']}"))


def measure_runbook(drill: Drill, child: dict[str, Any], step: str | None = None) -> None:
    """Record how long the runbook ran and, if named, one of its steps (where recovery time went)."""
    total = seconds(child)
    if total is not None:
        drill.measure("runbook_seconds", total, detail=f"{child['name']}: first to last step, kernel start excluded")
    took = step_seconds(child, step) if step else None
    if took is not None:
        drill.measure(f"{step.lower().replace(' ', '_')}_step_seconds", took, detail=f"{child['name']}: step {step!r}")


def seconds(child: dict[str, Any]) -> float | None:
    """How long the runbook ran, kernel start excluded (its journal's start to finish)."""
    if not child.get("started_at") or not child.get("finished_at"):
        return None
    return round((parse_iso(child["finished_at"]) - parse_iso(child["started_at"])).total_seconds(), 3)


def step_seconds(child: dict[str, Any], title_start: str) -> float | None:
    """Seconds of the runbook's first passed step whose title starts with ``title_start``."""
    for step in child["steps"]:
        if step["title"].startswith(title_start) and step["status"] == "passed":
            return float(step["seconds"])
    return None


def next_steps(drill: Drill, done: list[str], dry: list[str] | None = None) -> list[str]:
    """Print what the operator should do now: ``dry`` after a dry run, else ``done``."""
    lines = (dry or ["Nothing was changed (dry run). Re-run with dry_run = False and the gates approved."]
             ) if drill.dry_run else done
    print("What to do next:")
    for line in lines:
        print(f"  • {line}")
    return lines
