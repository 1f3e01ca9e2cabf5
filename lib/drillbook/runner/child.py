"""A catalogued notebook run from inside a drill's kernel (``Drill.run_notebook``).

It runs through the same pieces as a top-level run: the same parameter merging, the same engine
call under a ``Supervisor`` with a deadline (the child's ``timeout_seconds``, else the default),
a private run folder for its kernel's sockets, log and journal, and the parent's redactor.
Same environment, dry-run, approvals and change reference as the parent; no lock (the parent
holds it) and no ledger entry (the executed copy is archived in the parent's attachments).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import journal
from ..config import catalog, notebooks
from ..config.environments import Environment
from ..config.secrets import Redactor
from .outcome import classify, judge, keep_kernel_output
from .plan import DEFAULT_TIMEOUT, RunRequest, merge_parameters
from .supervise import KERNEL_LOG, KernelJob, Supervisor, import_runner, run_supervised


@dataclass
class ChildContext:
    """What a child run takes from the drill that starts it."""

    project: Path
    env: Environment
    dry_run: bool
    approve: list[str]
    change: str | None
    run_id: str
    redactor: Redactor
    attachments: Path | None  # the parent's attachments folder; None outside `drillbook run`


@dataclass
class _Child:
    """One child run, prepared: its notebook, parameters, deadline and where its copy goes."""

    job: KernelJob
    name: str
    timeout: float
    attachments: Path


def _prepare(parent: ChildContext, name: str, parameters: dict[str, Any]) -> _Child:
    path, entry = catalog.find(name, parent.project)
    nb = notebooks.read_notebook(path)
    declared = notebooks.declared_parameters(nb, path.name)
    request = RunRequest(target=name, env=parent.env.name, parameters=parameters, dry_run=parent.dry_run,
                         approve=list(parent.approve), change=parent.change)
    values = merge_parameters(request, declared, path.stem, parent.env, path)
    if "run_id" in declared:
        values["run_id"] = f"{parent.run_id}.{path.stem}"
    attachments = parent.attachments or Path(tempfile.mkdtemp(prefix="drillbook-child-"))
    # A short name: the child kernel's IPC sockets live in it, and a socket path is limited to 107 bytes.
    child_dir = Path(tempfile.mkdtemp(prefix="child-", dir=attachments.parent))
    job = KernelJob(path, attachments / f"{path.stem}.ipynb", values,
                    nb.metadata.get("kernelspec", {}).get("name"), child_dir, parent.project)
    timeout = entry.meta.timeout_seconds if entry else DEFAULT_TIMEOUT
    return _Child(job, path.stem, float(timeout), attachments)


def _failure(exc: BaseException | None, supervisor: Supervisor, timeout: float) -> str | None:
    """Why the child's execution failed, as its result reports it (None if it did not)."""
    if supervisor.reason is not None:
        return classify(exc, supervisor.reason, None, timeout)[1]
    if exc is None:
        return None
    return f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"


def _result(child: _Child, kernel_journal: dict[str, Any], error: str | None,
            timed_out: bool) -> dict[str, Any]:
    """The child's journal as the parent sees it; a deadline overrides what the kernel journalled."""
    status, reason = _status(kernel_journal, error, timed_out)
    return {"name": child.name, "notebook": f"attachments/{child.job.output.name}", "status": status,
            "reason": reason,
            "steps": kernel_journal.get("steps", []), "checks": kernel_journal.get("checks", []),
            "measures": kernel_journal.get("measures", []),
            "started_at": kernel_journal.get("started_at"), "finished_at": kernel_journal.get("finished_at")}


def _status(kernel_journal: dict[str, Any], error: str | None, timed_out: bool) -> tuple[str, str | None]:
    """What the child's kernel closed its run with, unless it failed to run or ran out of time."""
    status = kernel_journal.get("status")
    if not timed_out and status in journal.STATUSES:
        return status, kernel_journal.get("reason") or error
    if error:
        return "error", error
    return judge(kernel_journal)


def run_child(parent: ChildContext, name: str, parameters: dict[str, Any],
              on_prepared: Callable[[Path, Supervisor], None] | None = None) -> dict[str, Any]:
    """Run the catalogued notebook ``name``; its result (status, reason, steps, checks, measures)
    is returned and, inside a run, kept as attachments/<name>.journal.json beside the executed copy
    and the kernel's log (attachments/<name>.kernel.log). ``on_prepared(run_dir, supervisor)`` is
    called before its kernel starts (``runner.held`` holds it at its first step)."""
    child = _prepare(parent, name, parameters)
    supervisor = Supervisor(child.timeout)
    try:
        if on_prepared is not None:
            on_prepared(child.job.run_dir, supervisor)
        import_runner()  # in this thread, before the worker starts (see import_runner)
        exc = run_supervised(child.job, supervisor)
        keep_kernel_output(child.job.run_dir, parent.redactor, child.attachments / f"{child.name}.{KERNEL_LOG}")
        kernel_journal = journal.read_journal(child.job.run_dir) or {}
    finally:
        shutil.rmtree(child.job.run_dir, ignore_errors=True)
    result = _result(child, kernel_journal, _failure(exc, supervisor, child.timeout),
                     supervisor.reason == "timeout")
    if parent.attachments is not None:
        journal.write_json_atomic(child.attachments / f"{child.name}.journal.json", parent.redactor.scrub_obj(result))
    return result
