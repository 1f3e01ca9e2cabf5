"""The run record, one schema: what the kernel journals as a run goes and what ``record.json`` holds.

The kernel writes a ``Journal`` (``drill.py``); the runner builds a ``Record`` from the run plan
(``base_record``), then copies the journal's ``JOURNAL_FIELDS`` into it with the outcome
(``complete_record``); the site and ``drillbook status`` read it back. Keys are stored exactly as
declared here: archives written before must still read and verify, so a key is never renamed or
dropped, only added (as ``NotRequired`` when older records lack it).

A record holds: drill, env, status (passed|failed|error|aborted) and reason; parameters (secret
values never appear: the runner scrubs the whole record); steps, checks, measures next to the
environment's objectives, cleanups, gates; operator, host, versions; the notebook's sha256
and git commit.

``verdict`` is the one rule that turns what a run recorded into passed or failed.
"""
# No ``from __future__ import annotations`` here: TypedDict needs NotRequired evaluated to know
# which keys are optional (``__optional_keys__``).

import hashlib
import json
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, NotRequired, TypedDict, cast

from .. import journal

if TYPE_CHECKING:  # annotations only: loading environments (pydantic) would slow verify and status
    from ..config.environments import Environment

SCHEMA = 1
VERSIONED = ("drillbook", "papermill", "nbclient", "nbconvert", "ipykernel")

Status = Literal["passed", "failed", "error", "aborted"]  # the closed set (``journal.STATUSES``)
RUNNING = "running"  # a run's status until it ends


# --------------------------------------------------------------------------- what the kernel journals
class Step(TypedDict):
    title: str
    mutating: bool
    gate: str | None
    started_at: str
    status: str  # running | passed | failed | dry-run | not-applicable | skipped (on resume)
    ended_at: NotRequired[str]  # absent while the step runs
    seconds: NotRequired[float]
    detail: NotRequired[str]
    value: NotRequired[object]  # what the step returned, as JSON (``resuming``): a resumed run hands it on
    value_kept: NotRequired[str]  # "unkept": JSON cannot hold what it returned
    resumed_from: NotRequired[str]  # a skipped step: the run in which it completed


class Check(TypedDict):
    name: str
    passed: bool
    detail: str
    at: str


class Measure(TypedDict):
    name: str
    value: float
    unit: str
    objective: str | None  # the name of one of the environment's objectives
    objective_value: float | None
    better: str  # lower | higher
    verdict: str  # recorded | met | missed | no objective
    detail: str
    at: str


class CleanupOutcome(TypedDict):
    status: str  # passed | failed | refused | dry-run
    detail: NotRequired[str]


class Cleanup(CleanupOutcome):
    title: str
    started_at: str
    ended_at: str


class Gate(TypedDict):
    gate: str
    step: str | None  # None: approved ahead of its step
    at: str  # when it was confirmed (the answer, the button press, the run's start for --approve)
    how: str
    method: NotRequired[str]  # GATE_METHODS
    asked_at: NotRequired[str]  # when the step asked (a prompt), if it did


# How a gate was confirmed: in the panel, at the text prompt, by --approve/the approve parameter,
# or by a schedule entry's approvals.
GATE_METHODS = ("panel", "prompt", "approve", "schedule")
# What ran the notebook: ``drillbook run`` (papermill), or a person in a kernel (``drillbook.start``).
MODES = ("run", "interactive")
SEVERITIES = ("P0", "P1", "P2", "P3")


class Error(TypedDict):
    type: str
    message: str
    traceback: str


class Journal(TypedDict):
    """``$DRILLBOOK_RUN_DIR/journal.json``, rewritten by the kernel after every event."""

    run_id: str
    env: str
    dry_run: bool
    change: str | None
    operator: str
    operator_source: NotRequired[str]  # journal.OPERATOR_SOURCES or journal.OS_USER
    started_at: str
    finished_at: str | None
    status: str  # RUNNING, then a Status
    reason: str | None
    steps: list[Step]
    checks: list[Check]
    measures: list[Measure]
    cleanups: list[Cleanup]
    attachments: list[str]
    gates: list[Gate]
    secret_refs: list[str]  # journal.SECRET_REFS: references, never values
    seconds: NotRequired[float]  # set when the run closes
    error: NotRequired[Error]  # the exception that stopped the run
    note: NotRequired[str]
    mode: NotRequired[str]  # MODES
    severity: NotRequired[str | None]
    incident: NotRequired[str | None]
    approvals: NotRequired[list["ApprovalInfo"]]  # a person's run: the approvals pasted in its gate panels


class Results(TypedDict):
    """What a drill glues into its notebook (``Drill.results``); the record keeps it as ``results``."""

    run_id: str
    env: str
    dry_run: bool
    status: str
    reason: str | None
    steps: list[Step]
    checks: list[Check]
    measures: list[Measure]
    cleanups: list[Cleanup]


class ChildRun(TypedDict):
    """A runbook run from inside a drill (``Drill.run_notebook``), as its parent sees it."""

    name: str
    notebook: str  # attachments/<name>.ipynb in the parent's bundle
    status: str
    reason: str | None
    steps: list[Step]
    checks: list[Check]
    measures: list[Measure]
    started_at: str | None
    finished_at: str | None


# --------------------------------------------------------------------------- record.json
class Source(TypedDict):
    path: str
    sha256: str
    git_commit: str | None
    git_dirty: bool | None
    code_sha256: NotRequired[str | None]  # of the code cells' sources: saved outputs do not change it


class FailingCell(TypedDict):
    index: int
    execution_count: int | None
    source_first_line: str


class PlanHash(TypedDict):
    """What a run would do, bound by hashes (``evidence/approvals.py``): an approval names ``sha256``."""

    sha256: str  # of the three below, canonical JSON
    notebook_sha256: str
    parameters_sha256: str  # the parameters the operator and the environment give (not env/dry_run/approve/change)
    environment_sha256: str  # the environment file's bytes


class ApprovalInfo(TypedDict):
    """An approval that opened a gate of this run (``drillbook approve``, four eyes)."""

    id: str
    gate: str
    dry_run: str  # the run id of the dry run whose plan was approved
    approver: str
    key_fingerprint: str
    plan_sha256: str
    approved_at: str
    expires_at: str


class Record(TypedDict):
    schema: int
    run_id: str
    drill: str
    kind: str
    title: str
    notebook: str
    env: str
    production: bool
    status: str  # RUNNING in the in-flight marker, a Status once archived
    reason: str | None
    started_at: str
    finished_at: str | None
    seconds: float | None
    dry_run: bool
    approve: list[str]
    change: str | None
    parameters: dict[str, Any]
    objectives: dict[str, float]
    controls: list[str]
    operator: str
    host: str
    versions: dict[str, str | None]  # package → version; the runner adds kernel_python
    source: Source
    steps: list[Step]
    checks: list[Check]
    measures: list[Measure]
    cleanups: list[Cleanup]
    gates: list[Gate]
    attachments: list[str]
    failing_cell: FailingCell | None
    results: Results | None
    error: NotRequired[Error]  # from the journal, when the run was stopped by an exception
    note: NotRequired[str]
    mode: NotRequired[str]  # MODES; records written before it are "run"
    operator_source: NotRequired[str]  # where the operator's name came from (journal.operator_identity)
    severity: NotRequired[str | None]  # SEVERITIES, when the run serves an incident
    incident: NotRequired[str | None]  # the incident id
    resumes: NotRequired[str]  # the run this one resumes (``runner/resume.py``)
    resume_source_changed: NotRequired[bool]  # resumed with --allow-changed although the notebook changed
    plan: NotRequired[PlanHash]  # every run since approvals: what a dry run's approval binds
    approvals: NotRequired[list[ApprovalInfo]]
    notifications: NotRequired[list[dict[str, Any]]]  # each delivery of the run's notification (notify.py)


# What the record takes from the journal (the rest of the journal is the runner's to know).
JOURNAL_FIELDS = ("steps", "checks", "measures", "cleanups", "gates", "attachments", "error", "note", "approvals")
# Under ``drillbook run`` the runner checked the approvals before the kernel started: a notebook's journal
# never adds or removes one. In a person's run the kernel is the runner and journals them.
RUNNER_CHECKED = ("approvals",)


# --------------------------------------------------------------------------- the verdict
def verdict(checks: Iterable[Check], measures: Iterable[Measure],
            cleanups: Iterable[Cleanup] = ()) -> tuple[Status, str | None]:
    """The status a run earned by what it recorded, and why.

    ``failed`` when a check failed or an objective was missed (the reason names each), else
    ``error`` when a cleanup failed, else ``passed`` with no reason. Entries read back from a
    journal may be incomplete (a kernel that died mid-write of an older version): a missing
    field counts as not passed, never as a failure of this function.
    """
    failed = [str(c.get("name")) for c in checks if not c.get("passed")]
    missed = [str(m.get("name")) for m in measures if m.get("verdict") == "missed"]
    broken = [str(c.get("title")) for c in cleanups if c.get("status") == "failed"]
    if failed or missed:
        parts = ([f"check failed: {', '.join(failed)}"] if failed else []) + \
                ([f"objective missed: {', '.join(missed)}"] if missed else [])
        return "failed", "; ".join(parts)
    if broken:
        return "error", f"cleanup failed: {', '.join(broken)}"
    return "passed", None


def measured(name: str, value: float, unit: str, objective: str | None, better: str, detail: str,
             env: "Environment") -> Measure:
    """A measure, compared with ``env``'s objective ``objective`` when it names one: ``better='lower'``
    meets it when value ≤ objective, ``'higher'`` when value ≥ objective."""
    entry: Measure = {"name": name, "value": value, "unit": unit, "objective": objective, "objective_value": None,
                      "better": better, "verdict": "recorded", "detail": detail, "at": journal.now_iso()}
    if objective is not None:
        target = env.objectives.get(objective)
        if target is None:
            entry["verdict"] = "no objective"
            entry["detail"] = (detail + "; " if detail else "") + f"environment {env.name} sets no {objective}"
        else:
            ok = value <= target if better == "lower" else value >= target
            entry.update(objective_value=target, verdict="met" if ok else "missed")
    return entry


# --------------------------------------------------------------------------- building the record
@lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


PARAMETER_TAGS = ("parameters", "injected-parameters")  # papermill's: what an operator is meant to change


def code_sha256(path: Path) -> str | None:
    """sha256 of a notebook's code cells' sources, in order, parameter cells left out (None if it cannot
    be read as a notebook): what a resumed run compares. Running a working copy saves outputs into it, and
    an operator sets parameters (``resume = "RUN_ID"``) in the parameters cell: neither is a change of code."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else str(c["source"])
                   for c in cells if isinstance(c, dict) and c.get("cell_type") == "code"
                   and not set(c.get("metadata", {}).get("tags") or []) & set(PARAMETER_TAGS)]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return hashlib.sha256(json.dumps(sources).encode("utf-8")).hexdigest()


def source_info(path: Path, project: Path) -> Source:
    """The notebook as it was run: its path in the project (or file name, if outside it),
    sha256 of the file, and the git commit (dirty or not)."""
    try:
        shown = str(path.resolve().relative_to(project.resolve()))
    except ValueError:
        shown = path.name  # evidence names no machine paths
    info: Source = {"path": shown, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "git_commit": None, "git_dirty": None, "code_sha256": code_sha256(path)}
    commit = _git(["rev-parse", "HEAD"], path.parent)
    if commit:
        info["git_commit"] = commit
        status = _git(["status", "--porcelain", "--", path.name], path.parent)
        info["git_dirty"] = bool(status)
    return info


def base_record(*, run_id: str, drill: str, kind: str, title: str, notebook: str, env: "Environment",
                parameters: dict[str, Any], dry_run: bool, approve: list[str], change: str | None,
                controls: list[str], source: Source, operator: str, operator_source: str | None = None,
                mode: str = "run", severity: str | None = None, incident: str | None = None) -> Record:
    """The part of the record known before the kernel starts (also kept in the in-flight marker)."""
    return {
        "schema": SCHEMA, "run_id": run_id, "drill": drill, "kind": kind, "title": title,
        "notebook": notebook, "env": env.name, "production": env.production,
        "status": RUNNING, "reason": None, "started_at": journal.now_iso(), "finished_at": None,
        "seconds": None, "dry_run": dry_run, "approve": approve, "change": change,
        "parameters": parameters, "objectives": dict(env.objectives), "controls": controls,
        "operator": operator, "host": socket.gethostname(), "versions": versions(), "source": source,
        "steps": [], "checks": [], "measures": [], "cleanups": [], "gates": [], "attachments": [],
        "failing_cell": None, "results": None, "mode": mode,
        "operator_source": operator_source or journal.operator_identity()[1],
        "severity": severity, "incident": incident,
    }


def complete_record(record: Record, *, status: str, reason: str | None, seconds: float,
                    kernel_journal: Journal | None, failing_cell: FailingCell | None,
                    results: Results | None) -> Record:
    """The finished record: ``record`` with what the kernel journalled and the run's outcome."""
    journalled: dict[str, object] = {}
    if kernel_journal:
        raw = cast("dict[str, object]", kernel_journal)  # keys chosen at run time, from JOURNAL_FIELDS
        journalled = {key: raw[key] for key in JOURNAL_FIELDS if key in raw
                      and (key not in RUNNER_CHECKED or record.get("mode") == "interactive")}
        if kernel_journal.get("operator"):  # the kernel names who ran it, and from which source
            journalled["operator"] = kernel_journal["operator"]
            journalled["operator_source"] = kernel_journal.get("operator_source") or record.get("operator_source")
    done = cast(Record, {**record, **journalled})
    done.update(status=status, reason=reason, finished_at=journal.now_iso(), seconds=round(seconds, 3),
                failing_cell=failing_cell, results=results)
    return done
