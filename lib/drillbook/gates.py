"""What a drill must have before it changes anything: an approved gate, and on production a change
reference.

The functions read and write the run's own public state (``approved``, ``unattended``, the
journal's ``gates``), passed in as a :class:`Gated`, so a drill and its helpers never disagree
about what is approved.

A gate is confirmed by typing its word in full: the gate's name, or the word the step declares
(``confirm="ROLLBACK"``). In JupyterLab an unapproved gate never waits: a kernel cannot handle a
widget's click while a cell runs (ipykernel handles comm messages on the shell channel, queued
behind the cells Run All sent), so a step that reaches an unapproved gate shows the gate's panel
in its own output and stops the cell with :class:`AwaitingApproval`. Run All stops there; the run
stays open; the operator approves and runs the cell again. A terminal IPython asks at a prompt.

A person's LIVE run on an environment that requires approval (every production one) is held to the
four-eyes rule of ``drillbook run --approval``: neither the typed word, nor the prompt, nor the
``approve`` parameter opens a gate there; an approval pasted in the gate's panel does, once
``approval_for`` found it valid (``runner/personplan.py`` says what its plan hash binds). A dry run is
never held to approvals.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from . import journal
from .config.environments import Environment
from .errors import ChangeRequired, GateNotApproved
from .evidence.record import ApprovalInfo, Gate, Journal, PlanHash


class Gated(Protocol):
    """The parts of a run the guards read (a ``Drill``)."""

    env: Environment
    dry_run: bool
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


class AwaitingApproval(GateNotApproved):
    """A step reached a gate nobody approved yet, in JupyterLab: the cell stops (and Run All with
    it) but the run stays open; approving in the panel and running the cell again goes on."""

    def _render_traceback_(self) -> list[str]:
        """What IPython prints instead of a traceback: the message and the hint, nothing else."""
        return [f"\x1b[1;33m‖ {self.message}\x1b[0m", f"hint: {self.hint}"]


# How a step shows the gate's panel in its own output (set by ``ui`` in a kernel with a frontend):
# called with the run, the gate, the step's title and the word to type.
InPlacePanel = Callable[["Gated", str, str, str], None]
_in_place: list[InPlacePanel] = []
# The word each gate was confirmed with in a panel, per run (absent: approved by parameter).
_typed: WeakKeyDictionary[Gated, dict[str, str]] = WeakKeyDictionary()


# The approval that opened each gate of a person's run held to four eyes (see ``needs_approval``).
_by_approval: WeakKeyDictionary[Gated, dict[str, ApprovalInfo]] = WeakKeyDictionary()
# How a step checks, as it passes its gate, that the approval still matches the run (set by ``runner/personplan``).
Recheck = Callable[["Gated", ApprovalInfo], "str | None"]  # why it no longer matches, or None
_recheck: list[Recheck] = []


def show_in_place_with(show: InPlacePanel) -> None:
    _in_place[:] = [show]


def recheck_with(recheck: Recheck) -> None:
    _recheck[:] = [recheck]


def needs_approval(run: Gated) -> bool:
    """A person's live run on an environment that requires approval: only an approval opens its gates."""
    return run.env.production and not run.dry_run and not run.unattended


def opened_by(run: Gated, gate: str) -> ApprovalInfo | None:
    """The approval that opened ``gate`` of this run in its panel, if one did."""
    return _by_approval.get(run, {}).get(gate)


def open_by_approval(run: Gated, info: ApprovalInfo) -> None:
    """Open ``info``'s gate with the approval ``approval_for`` checked; the record carries it, as a CLI run's."""
    gate = info["gate"]
    run.approved.add(gate)
    _by_approval.setdefault(run, {})[gate] = info
    _typed.get(run, {}).pop(gate, None)  # the approval, not a typed word, opened it
    carried = [a for a in run.data.get("approvals", []) if a["gate"] != gate]
    run.data["approvals"] = [*carried, info]
    run.data["gates"].append({"gate": gate, "step": None, "at": journal.now_iso(), "method": "approval",
                              "how": f"opened by approval {info['id']} of {info['approver']} (dry run "
                                     f"{info['dry_run']}), pasted in the gate panel by {run.data['operator']}"})


def is_approved(run: Gated, gate: str, word: str | None = None) -> bool:
    """Approved by parameter, or confirmed in a panel with the word this step asks for."""
    typed = _typed.get(run, {}).get(gate)
    return gate in run.approved and (typed is None or typed == (word or gate))


def pass_gate(run: Gated, gate: str, title: str, word: str | None = None) -> None:
    """Let step ``title`` through ``gate``: approved in advance or in the panel, or confirmed by a
    person at a prompt (never in an unattended run). Journals how; raises ``GateNotApproved``
    otherwise, and ``AwaitingApproval`` in JupyterLab after showing the panel."""
    required = word or gate
    held = needs_approval(run)
    approval = opened_by(run, gate) if held else None
    changed = _recheck[0](run, approval) if approval is not None and _recheck else None
    if changed:  # e.g. a parameter set again since the approval was pasted: it no longer opens the gate
        _by_approval[run].pop(gate)
        approval = None
    if (approval is not None or not held) and is_approved(run, gate, word):
        entry = _approved(run, gate, title)
    elif run.unattended:
        raise GateNotApproved(
            f"gate {gate!r} (step {title!r}) is not approved; an unattended run never waits for input",
            f"re-run with --approve {gate} once you are sure",
        )
    elif _in_place:
        run.data["steps"].pop()  # the step never started: drop the record its drill opened before asking
        _in_place[0](run, gate, title, required)
        what = (f"paste the id of an approval of gate {gate} above (an approver signs one with drillbook approve "
                f"DRY_RUN_ID --gate {gate})" if held else f"type {required} above")
        raise AwaitingApproval(
            f"stopped before {title!r}: gate {gate!r} is not approved{f' ({changed})' if changed else ''} "
            "(nothing was changed by this step)",
            f"{what} and press Approve, then Shift+Enter runs this cell and goes on; "
            "Run All stops at every unapproved gate because the kernel reads a click only between cells")
    elif held:
        raise GateNotApproved(
            f"gate {gate!r} (step {title!r}) needs an approval: environment {run.env.name!r} requires four eyes",
            f"open this notebook in JupyterLab and paste an approval id (drillbook approve DRY_RUN_ID --gate {gate}) "
            "in the gate panel, or run it with drillbook run --approval ID")
    else:
        asked = journal.now_iso()
        ask(gate, title, required)
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


def ask(gate: str, title: str, word: str | None = None) -> None:
    """Ask the person at the keyboard to type the gate's word in full; anything else refuses the step."""
    required = word or gate
    try:
        answer = input(f"Step {title!r} is dangerous. Type {required} to proceed: ")
    except Exception as exc:  # StdinNotImplementedError under bare papermill, EOF without a tty
        raise GateNotApproved(
            f"gate {gate!r} (step {title!r}) needs confirmation and no one can answer ({type(exc).__name__})",
            f"pass approve=['{gate}'] as a parameter, or run interactively",
        ) from None
    if answer.strip() != required:
        raise GateNotApproved(f"gate {gate!r} not confirmed (typed {answer.strip()!r})",
                              f"type {required} in full to proceed")


def approve(run: Gated, gate: str, how: str | None = None, method: str = "panel", word: str | None = None) -> None:
    """Approve ``gate`` ahead of its step, now, journalling who and how (the caller saves the journal).
    ``word``: what the person typed in a panel, which a step that declares its own word checks."""
    run.approved.add(gate)
    if word is not None:
        _typed.setdefault(run, {})[gate] = word
    run.data["gates"].append({"gate": gate, "step": None, "at": journal.now_iso(), "method": method,
                              "how": how or f"approved in the gate panel by {run.data['operator']}"})



def approval_for(approval_id: str, gate: str, *, drill: str, env: Environment, notebook: Path | None,
                 parameters: dict[str, Any], operator: str, archive: Path | None = None,
                 project: Path | None = None, plan: PlanHash | None = None) -> ApprovalInfo:
    """The approval ``approval_id`` if it opens ``gate`` of this run now (a gate panel's check);
    ``plan``: the run's plan hash, when it is not that of ``notebook`` and ``parameters``.

    Raises ``ApprovalRefused`` (a DrillbookError) with one line naming the failed condition: not in
    the ledger, not an approver's key, by the operator, expired, or the plan (notebook, parameters,
    environment file) changed since the approved dry run.
    """
    from . import paths
    from .evidence import approvals  # the archive's cryptography: loaded only when a panel asks

    project = project or paths.project_root()
    return approvals.approval_for(approval_id, gate, drill=drill, env=env, notebook=notebook, parameters=parameters,
                                  operator=operator, archive=archive or paths.archive_root(project), project=project,
                                  plan=plan)


def require_change_up_front(env: Environment, dry_run: bool, change: str | None, unattended: bool) -> None:
    """An operator going live on production gives the change reference when the run starts, not
    when its first mutating step refuses (an unattended run is refused at that step, as before)."""
    if env.production and not dry_run and not change and not unattended:
        raise ChangeRequired(
            f"a live run on production environment {env.name!r} needs a change reference before it starts",
            "type it in the picker's change box (or set change = 'CHG-1234' in the parameters cell), "
            "then run the picker's cell and this one again")
