"""Four eyes in a person's run: what an approval binds there, and how a gate panel opens a gate with one.

A LIVE run in JupyterLab on an environment that requires approval (every ``production: true`` one) is
held to the rule of ``drillbook run --approval`` (``gates.needs_approval``): the gate's panel takes an
approval id, ``approve_with`` checks it with ``gates.approval_for`` and opens the gate only when it is
valid; the run's record carries it as a CLI run's does. The plan hash it must match is the one every
interactive run records (``plan_hash``), built as the runner builds it (``evidence/approvals.py``),
so that the dry run an approver approved, usually ``drillbook run X --env E --dry-run`` of the runbook
file, matches the person's run:

* the notebook: for an incident's working copy (``incident.json``), the runbook it was copied from, by
  the sha256 ``drillbook incident open`` recorded (``source_sha256``). The copy's own bytes always
  differ from the runbook's (its outputs, its ``env``, the edit that makes it live), so they cannot be
  what was approved; and a runbook changed since the copy was made no longer matches, because the
  copy holds the code from before. Any other notebook: its file as saved (JupyterLab's pre-save hook
  keeps a source runbook free of runs, so opening ``runbooks/X.ipynb`` hashes what the CLI hashed).
* the parameters: every parameter the notebook declares, with its value in the kernel now (what the
  picker and the parameters cell set; the notebook's default where the kernel has none), less what
  the runner sets (env, dry_run, approve, change, run_id, severity, incident).
* the environment file's bytes.

What is not bound: a code cell edited in the browser and run without saving the runbook; the
evidence notebook holds every cell that ran, so that edit is on the record. The plan is checked again
when the gated step runs (``recheck``): a parameter set again after the approval was pasted closes the
gate again, naming what changed.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import gates, incidentfile, kernel
from ..config import notebooks
from ..config.environments import Environment
from ..errors import DrillbookError
from ..evidence.approvals import ApprovalRefused, plan_of
from ..evidence.record import ApprovalInfo, PlanHash

APPROVAL_ID = re.compile(r"apv-[0-9a-f]{16}")
SHA256 = re.compile(r"[0-9a-f]{64}")
PASTE = "this environment needs an approval: paste the id from `drillbook approve`"


@dataclass(frozen=True)
class PlanSource:
    """Where a person's run takes its plan from: the notebook the kernel runs, its folder, the run's name."""

    notebook: Path | None
    folder: Path  # the kernel's working folder: a working copy's incident.json is there
    drill: str


class PersonsRun(gates.Gated, Protocol):
    """The parts of a person's run an approval reads and changes (a ``Drill``)."""

    project: Path

    def _save(self) -> None: ...


def _notebook_sha256(source: PlanSource) -> str | None:
    try:
        incident = incidentfile.load_incident_file(source.folder)
    except DrillbookError:
        incident = None
    if incident is not None and incident.runbook:  # the runbook as it was copied, not the copy's own bytes
        sha = incident.source_sha256 or ""
        return sha if SHA256.fullmatch(sha) else None
    if source.notebook is None or not source.notebook.is_file():
        return None
    return hashlib.sha256(source.notebook.read_bytes()).hexdigest()


def parameters(source: PlanSource) -> dict[str, Any]:
    """The declared parameters with their values in this kernel (the defaults where it has none)."""
    if source.notebook is None:
        return {}
    try:
        declared = notebooks.declared_parameters(notebooks.read_notebook(source.notebook), source.notebook.name)
    except DrillbookError:
        return {}
    ip = kernel.ipython()
    space: dict[str, Any] = ip.user_ns if ip is not None else {}
    return {name: space.get(name, p.default) for name, p in declared.items()}


def plan_hash(source: PlanSource, env: Environment) -> PlanHash | None:
    """The run's plan hash now, or None when the kernel cannot tell which notebook it runs."""
    sha = _notebook_sha256(source)
    return None if sha is None else plan_of(sha, parameters(source), Path(env.source))


def approve_with(run: PersonsRun, source: PlanSource, approval_id: str, gate: str) -> ApprovalInfo:
    """Open ``gate`` with the approval pasted in its panel, if it is valid for this run now; otherwise
    ``ApprovalRefused`` with the one line that says which condition failed (the gate stays closed)."""
    # The archive's ledger, also when the archive is on object storage
    from .plan import _ledger_folder

    aid = approval_id.strip()
    if not APPROVAL_ID.fullmatch(aid):
        raise ApprovalRefused(f"not an approval id: {aid[:40]!r}", "paste the id drillbook approve printed (apv-…)")
    plan = plan_hash(source, run.env)
    if plan is None:
        raise ApprovalRefused("this kernel cannot tell which notebook it runs, so no approval can match it",
                              "open the runbook, or its working copy, in JupyterLab")
    info = gates.approval_for(aid, gate, drill=source.drill, env=run.env, notebook=None, parameters={},
                              operator=run.data["operator"], archive=_ledger_folder(run.project),
                              project=run.project, plan=plan)
    gates.open_by_approval(run, info)
    gates.recheck_with(lambda again, approval: recheck(source, again, approval))
    run._save()
    return info


def recheck(source: PlanSource, run: gates.Gated, approval: ApprovalInfo) -> str | None:
    """Why ``approval`` no longer matches the run as its gated step starts, or None when it does."""
    plan = plan_hash(source, run.env)
    if plan is not None and plan["sha256"] == approval["plan_sha256"]:
        return None
    return f"approval {approval['id']} no longer matches: the plan changed since it was pasted"
