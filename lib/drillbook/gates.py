"""What a drill must have before it changes anything: an approved gate, and on production a change
reference.

The functions read and write the run's own public state (``approved``, ``unattended``, the
journal's ``gates``), passed in as a :class:`Gated`, so a drill and its helpers never disagree
about what is approved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from . import journal
from .config.environments import Environment
from .errors import GateNotApproved
from .evidence.record import ApprovalInfo, Gate, Journal


class Gated(Protocol):
    """The parts of a run the guards read (a ``Drill``)."""

    env: Environment
    change: str | None
    approved: set[str]
    unattended: bool
    data: Journal


def change_missing(run: Gated, what: str) -> str | None:
    """Why ``what`` (a mutating step or cleanup) may not run, or None when it may: production
    changes need a change reference."""
    if run.env.production and not run.change:
        return f"{what} changes production environment {run.env.name!r} and no change reference was given"
    return None


def pass_gate(run: Gated, gate: str, title: str) -> None:
    """Let step ``title`` through ``gate``: approved in advance, or confirmed by a person at a prompt
    (never in an unattended run). Journals when it was confirmed and how; raises ``GateNotApproved``
    otherwise."""
    if gate in run.approved:
        entry = _approved(run, gate, title)
    elif run.unattended:
        raise GateNotApproved(
            f"gate {gate!r} (step {title!r}) is not approved; an unattended run never waits for input",
            f"re-run with --approve {gate} once you are sure",
        )
    else:
        asked = journal.now_iso()
        ask(gate, title)
        run.approved.add(gate)  # the confirmation is when the person answered, not when asked
        entry = Gate(gate=gate, step=title, at=journal.now_iso(), how=f"confirmed at the prompt by {run.data['operator']}",
                     method="prompt", asked_at=asked)
    run.data["gates"].append(entry)


def _approved(run: Gated, gate: str, title: str) -> Gate:
    """The entry of a step let through by an approval given before it: in the panel (when the
    button was pressed) or with the run (``--approve``/the approve parameter: when the run began)."""
    for earlier in reversed(run.data["gates"]):
        if earlier["gate"] == gate and earlier["step"] is None and earlier.get("method", "panel") != "approve":
            return Gate(gate=gate, step=title, at=earlier["at"], how=earlier["how"],
                        method=earlier.get("method", "panel"))
    return Gate(gate=gate, step=title, at=run.data["started_at"], method="approve",
                how="approved when the run was started (--approve or the approve parameter)")


def ask(gate: str, title: str) -> None:
    """Ask the person at the keyboard to type the gate's name; anything else refuses the step."""
    try:
        answer = input(f"Step {title!r} is dangerous. Type {gate} to proceed: ")
    except Exception as exc:  # StdinNotImplementedError under bare papermill, EOF without a tty
        raise GateNotApproved(
            f"gate {gate!r} (step {title!r}) needs confirmation and no one can answer ({type(exc).__name__})",
            f"pass approve=['{gate}'] as a parameter, or run interactively",
        ) from None
    if answer.strip() != gate:
        raise GateNotApproved(f"gate {gate!r} not confirmed (typed {answer.strip()!r})",
                              f"type exactly {gate} to proceed")


def approve(run: Gated, gate: str, how: str | None = None, method: str = "panel") -> None:
    """Approve ``gate`` ahead of its step, now, journalling who and how (the caller saves the journal)."""
    run.approved.add(gate)
    run.data["gates"].append({"gate": gate, "step": None, "at": journal.now_iso(), "method": method,
                              "how": how or f"approved in the gate panel by {run.data['operator']}"})


def approval_for(approval_id: str, gate: str, *, drill: str, env: Environment, notebook: Path,
                 parameters: dict[str, Any], operator: str, archive: Path | None = None,
                 project: Path | None = None) -> ApprovalInfo:
    """The approval ``approval_id`` if it opens ``gate`` of this run now (a gate panel's check).

    Raises ``ApprovalRefused`` (a DrillbookError) with one line naming the failed condition: not in
    the ledger, not an approver's key, by the operator, expired, or the plan (notebook, parameters,
    environment file) changed since the approved dry run.
    """
    from . import paths
    from .evidence import approvals  # the archive's cryptography: loaded only when a panel asks

    project = project or paths.project_root()
    return approvals.approval_for(approval_id, gate, drill=drill, env=env, notebook=notebook, parameters=parameters,
                                  operator=operator, archive=archive or paths.archive_root(project), project=project)

