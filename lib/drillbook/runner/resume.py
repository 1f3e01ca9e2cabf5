"""Resuming a failed or aborted run: which run, whether it may be resumed, and what its kernel is told.

    original()     the archived record of the run to resume, or one line why not (exit 2, nothing
                   written): unknown, passed, on another environment, already resumed
    check_source() the notebook is the one that ran (its code cells' hash), unless ``allow_changed``
    request_for()  the ``drillbook run --resume`` request: the original's notebook, environment,
                   parameters, severity and incident, with what the operator gives on top
    stamp()        ``resumes`` (and ``resume_source_changed``) in the new run's base record
    hand_over()    ``resume.json`` in the new run's private folder: the steps the kernel may skip

The resumed run is a run of its own (own id, bundle, ledger entry); only its record names the run
it resumes, and the site draws the reverse link. Which steps are skipped is the kernel's to decide
(``resuming``): only those declared ``resume="skip"`` that completed; everything else runs again.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import ResumeRefused
from ..evidence import ledger
from ..evidence.archive import RECORD_NAME, RUNS, load_record
from ..evidence.record import Record, code_sha256
from ..resuming import write_handover
from .plan import RunRequest

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
RESUMABLE = ("failed", "error", "aborted")
# What the runner sets itself: never carried over from the original's parameters.
RUNNER_SET = ("env", "dry_run", "approve", "change", "run_id", "severity", "incident", "resume")


def _resumed_by(archive: Path, run_id: str) -> str | None:
    """The archived run that already resumed ``run_id``, if any."""
    for path in sorted((archive / RUNS).glob(f"*/{RECORD_NAME}")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("resumes") == run_id:
            return str(rec.get("run_id"))
    return None


def original(run_id: str, archive: Path, env: str | None = None) -> Record:
    """The record of the run to resume; ``ResumeRefused`` (one line) when it cannot be resumed."""
    if not RUN_ID.fullmatch(run_id or ""):
        raise ResumeRefused(f"{run_id!r} is not a run id", "see drillbook status for the ids of recent runs")
    entries = [e for e in ledger.read_entries(archive) if e.get("run_id") == run_id]
    if not entries:
        raise ResumeRefused(f"run {run_id} is unknown: the ledger has no such run",
                            "see drillbook status for the ids of recent runs")
    rec = load_record(archive, run_id)
    status = rec.get("status")
    if status == "passed":
        raise ResumeRefused(f"run {run_id} passed: there is nothing to resume",
                            f"start a new run instead: drillbook run {rec.get('drill')} --env {rec.get('env')}")
    if status not in RESUMABLE:
        raise ResumeRefused(f"run {run_id} ended {status!r}: only a failed, error or aborted run can be resumed")
    if env and env != rec.get("env"):
        raise ResumeRefused(f"run {run_id} ran on environment {rec.get('env')!r}, not {env!r}",
                            f"resume it on its own environment: --env {rec.get('env')}, or start a new run")
    resumer = _resumed_by(archive, run_id)
    if resumer:
        raise ResumeRefused(f"run {run_id} was already resumed by run {resumer}",
                            f"resume {resumer} instead if it did not pass")
    return rec


def check_source(rec: Record, notebook: Path, allow_changed: bool) -> bool:
    """Whether ``notebook`` differs from the one the run ran (refused unless ``allow_changed``).

    Code cells are compared (``code_sha256``), so saved outputs of a working copy do not count as a change;
    a record written before that hash existed is compared by the file's sha256.
    """
    before = rec.get("source") or {}
    was, now = before.get("code_sha256"), code_sha256(notebook)
    if was is None:
        was, now = before.get("sha256"), _file_sha(notebook)
    changed = was != now
    if changed and not allow_changed:
        raise ResumeRefused(f"the notebook {rec.get('notebook')} changed since run {rec.get('run_id')} ran it",
                            "start a new run, or pass --allow-changed (allow_changed=True) to resume anyway; "
                            "the record says so")
    return changed


def _file_sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def notebook_of(rec: Record, project: Path) -> str:
    """What to run again: the notebook the record names, if it is still in the project, else its catalog name."""
    named = project / str(rec.get("notebook") or "")
    if named.suffix == ".ipynb" and named.is_file() and named.resolve().is_relative_to(project.resolve()):
        return str(named)
    return str(rec.get("drill"))


def request_for(run_id: str, given: RunRequest, project: Path, archive: Path) -> RunRequest:
    """The request that resumes ``run_id``: its notebook, environment and parameters; the operator's
    ``-p``, approvals, change, timeout and wait on top; dry run if either asks for it."""
    from ..config import catalog  # the notebook's path, as prepare() will find it

    rec = original(run_id, archive, given.env or None)
    if given.target and given.target not in (rec.get("drill"), rec.get("notebook")):
        raise ResumeRefused(f"run {run_id} ran {rec.get('drill')}, not {given.target}",
                            f"drop the name: drillbook run --resume {run_id}")
    target = notebook_of(rec, project)
    check_source(rec, catalog.find(target, project)[0], given.allow_changed)
    carried = {k: v for k, v in (rec.get("parameters") or {}).items() if k not in RUNNER_SET}
    return RunRequest(target, str(rec.get("env")), {**carried, **given.parameters},
                      given.dry_run or bool(rec.get("dry_run")), list(given.approve), given.change or rec.get("change"),
                      given.timeout, given.wait, given.preflight, given.severity or rec.get("severity"),
                      given.approved_by, given.incident or rec.get("incident"), approvals=list(given.approvals),
                      resume=run_id, allow_changed=given.allow_changed)


def stamp(base: Record, resumes: str | None, changed: bool) -> None:
    """Name the run resumed in the new run's record (and that its notebook changed, when allowed)."""
    if resumes:
        base["resumes"] = resumes
        if changed:
            base["resume_source_changed"] = True


def stamp_run(base: Record, request: RunRequest, notebook: Path, archive: Path) -> None:
    """``drillbook run --resume``: the record says which run it resumes (already validated by ``request_for``)."""
    if request.resume:
        rec = load_record(archive, request.resume)
        stamp(base, request.resume, check_source(rec, notebook, allow_changed=True) and request.allow_changed)


def check_interactive(resumes: str | None, notebook: Path | None, archive: Path, allow_changed: bool) -> bool:
    """``drillbook.start(resume=…)``: the notebook on screen is the one that ran (else refused unless allowed)."""
    if not resumes:
        return False
    rec = load_record(archive, resumes)
    if notebook is None:
        raise ResumeRefused(f"this kernel cannot tell which notebook it runs, so run {resumes} cannot be resumed here",
                            f"open the notebook in JupyterLab, or run drillbook run --resume {resumes}")
    return check_source(rec, notebook, allow_changed)


def hand_over(resumes: str | None, run_dir: Path, archive: Path) -> None:
    """Give the resumed run's kernel the steps of the run it resumes (``resume.json``)."""
    if resumes:
        write_handover(run_dir, resumes, list(load_record(archive, resumes).get("steps") or []))
