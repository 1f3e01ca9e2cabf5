"""One run, from a validated plan to its archived bundle.

    execute()  lock the environment, run papermill in a private run folder under a supervisor
               (the clock, signals), then archive the bundle whatever happened, and only then
               report the status
    run()      recover dead runners' runs, prepare, execute

Statuses are a closed set: passed, failed (a check or objective failed), error (an exception,
a dead kernel, a timeout), aborted (interrupted, or killed: see ``inflight``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
from nbformat import NotebookNode

from .. import journal, notify, paths, scraps
from ..config import notebooks
from ..errors import EvidenceError
from ..evidence import approvals, freeze, keys, record
from ..evidence.archive import run_dir as bundle_dir
from ..evidence.remote import STAGING, archive_run, preflight
from ..evidence.store import S3Archive, project_archive
from ..journal import operator_identity
from . import inflight, locks, resume
from .outcome import classify, html_header, keep_kernel_output, mark_failure
from .plan import Plan, RunRequest, prepare, refresh_redactor
from .render import HtmlRenderer
from .supervise import KERNEL_LOG, KernelJob, ProgressFn, Supervisor, import_runner, launched_kernel, run_supervised

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager as KernelManagerType


@dataclass
class Outcome:
    run_id: str
    status: str
    reason: str | None
    bundle: Path | str  # a folder, or the URL of the bundle on object storage
    record: dict[str, Any]


def _load_output(output: Path, plan: Plan) -> NotebookNode:
    try:
        return nbformat.read(str(output), as_version=4)
    except (OSError, ValueError):
        return notebooks.read_notebook(plan.path)  # the kernel never started: archive the source


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _runner_error(status: str, reason: str | None, what: str, exc: BaseException) -> tuple[str, str]:
    """A failure of the runner itself (not of the notebook) makes the run an error, keeping what
    the notebook's own outcome said; an aborted run stays aborted."""
    detail = f"{what}: {_describe(exc)}"
    combined = f"{reason}; {detail}" if reason else detail
    return ("aborted" if status == "aborted" else "error"), combined


@dataclass
class _Ran:
    """What the execution phase left for the archive phase."""

    failed_cells: list[int]
    t0: float
    exc: BaseException | None = None
    renderer: HtmlRenderer | None = None  # None if not even its thread could be started


def _run(plan: Plan, run_dir: Path, project: Path, supervisor: Supervisor, on_cell: ProgressFn,
         ran: _Ran) -> None:
    """Execute the notebook; the failure to record, if any, goes to ``ran.exc`` (never raised:
    whatever happens, the run is archived). The kernel is launched first, so it boots while this
    thread imports everything the papermill worker and the HTML warm-up need; only then do they
    start (see ``import_runner``)."""
    job = KernelJob(plan.path, run_dir / "output.ipynb", plan.parameters, plan.kernel_name, run_dir, project)
    try:
        with launched_kernel(job) as kernel:
            _run_in(kernel, job, supervisor, on_cell, ran)
    except Exception as exc:  # the kernel could not be started (or stopped)
        ran.exc = ran.exc or exc
    if ran.renderer is None:  # the page of the source notebook can still be built
        ran.renderer = HtmlRenderer()


def _run_in(kernel: KernelManagerType, job: KernelJob, supervisor: Supervisor, on_cell: ProgressFn,
            ran: _Ran) -> None:
    try:
        import_runner()
    except Exception as exc:  # nothing can run; the page of the source notebook can still be built
        ran.exc = exc
    try:
        ran.renderer = HtmlRenderer()
        if ran.exc is None:
            ran.exc = run_supervised(job, supervisor, on_cell, kernel)
    except Exception as exc:  # e.g. no thread could be started
        ran.exc = ran.exc or exc


def _document(plan: Plan, base: dict[str, Any], run_dir: Path, status: str, reason: str | None,
              kernel_journal: dict[str, Any] | None, ran: _Ran) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's record and its executed notebook (marked, scrubbed) for this status and reason."""
    reason = plan.redactor.scrub(reason) if reason else reason  # it is printed and recorded
    nb = _load_output(run_dir / "output.ipynb", plan)
    failing = mark_failure(nb, status, reason, ran.failed_cells[0] if ran.failed_cells else None)
    done = record.complete_record(
        base, status=status, reason=reason, seconds=time.monotonic() - ran.t0, kernel_journal=kernel_journal,
        failing_cell=failing, results=scraps.read_scraps(nb).get(scraps.RESULTS_SCRAP),
    )
    done["versions"] = {**done["versions"], "kernel_python": nb.metadata.get("language_info", {}).get("version")}
    for gate in done["gates"]:  # the kernel knows only that approvals came with the run; the runner knows whence
        if gate.get("method") == "approve" and plan.request.approved_by == "schedule":
            gate.update(method="schedule", how="approved by the schedule entry's approve list")
    return done, plan.redactor.scrub_obj(nb)


def _evidence(plan: Plan, base: dict[str, Any], run_dir: Path, supervisor: Supervisor, project: Path,
              ran: _Ran) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Classify the run and build what is archived: record, scrubbed notebook, HTML (if it renders)."""
    # First, so the warm-up's last imports never overlap any this thread may do from here on.
    warm_error = ran.renderer.wait() if ran.renderer is not None else None
    kernel_journal = journal.read_journal(run_dir)
    refresh_redactor(plan.redactor, plan.env, plan.parameters, project, run_dir / "attachments", kernel_journal)
    status, reason = classify(ran.exc, supervisor.reason, kernel_journal, plan.timeout)
    keep_kernel_output(run_dir, plan.redactor, run_dir / "attachments" / KERNEL_LOG)
    if warm_error is not None:
        status, reason = _runner_error(status, reason, "the HTML page could not be prepared", warm_error)
    done, clean_nb = _document(plan, base, run_dir, status, reason, kernel_journal, ran)
    if ran.renderer is None or warm_error is not None:
        return done, clean_nb, None
    try:
        return done, clean_nb, ran.renderer.render(nbformat.from_dict(clean_nb), html_header(done))
    except Exception as exc:  # the notebook is still archived, and the record says why the page is missing
        status, reason = _runner_error(status, reason, "the notebook could not be rendered to HTML", exc)
        done, clean_nb = _document(plan, base, run_dir, status, reason, kernel_journal, ran)
        return done, clean_nb, None


def _fallback_record(plan: Plan, base: dict[str, Any], ran: _Ran, exc: Exception) -> dict[str, Any]:
    """The record of a run whose evidence could not be built: an error, with the runner's reason."""
    reason = plan.redactor.scrub(_describe(exc))
    return record.complete_record(base, status="error", reason=f"the runner failed while archiving the run: {reason}",
                                  seconds=time.monotonic() - ran.t0, kernel_journal=None, failing_cell=None,
                                  results=None)


def _base_record(plan: Plan, project: Path) -> dict[str, Any]:
    """What the record says before the run starts: what runs, where, by whom, with which approvals."""
    entry = plan.entry
    operator, operator_source = operator_identity()  # the kernel, which inherits the environment, says the same
    base = record.base_record(
        run_id=plan.run_id, drill=plan.name, kind=entry.kind if entry else "notebook",
        title=entry.meta.title if entry else plan.path.stem, notebook=_relative(plan.path, project),
        env=plan.env, parameters=plan.parameters, dry_run=plan.request.dry_run,
        approve=list(plan.request.approve), change=plan.request.change,
        controls=list(entry.meta.controls) if entry else [], source=record.source_info(plan.path, project),
        operator=operator, operator_source=operator_source, mode="run",
        severity=plan.request.severity, incident=plan.request.incident,
    )
    # What an approval binds: the parameters with the notebook's defaults, as a person's run hashes them
    base["plan"] = approvals.plan_hash(plan.path, plan.scrub_parameters, Path(plan.env.source))
    if plan.approvals:
        base["approvals"] = list(plan.approvals)
    return base


def execute(plan: Plan, progress: ProgressFn | None = None, project: Path | None = None,
            archive: Path | S3Archive | None = None, state: Path | None = None) -> Outcome:
    project = project or paths.project_root()
    archive = archive or project_archive(project)
    state = state or paths.state_dir(project)
    key = keys.load_or_create_signing_key()  # fail before running if the key is unusable
    if isinstance(archive, S3Archive):
        preflight(archive)  # nor run a drill whose evidence has nowhere to go
    base = _base_record(plan, project)
    resume.stamp_run(base, plan.request, plan.path, archive)  # a resumed run names the run it resumes
    with locks.hold(state, plan.env.name, plan.run_id, plan.request.wait, operator=base["operator"]):
        folder = archive if isinstance(archive, Path) else None
        freezable = freeze.stops(base["kind"])  # a drill, not a runbook someone runs to recover
        if freezable:
            freeze.refuse_if_frozen(plan.env.name, archive)  # under the lock: a freeze from now on interrupts
        marker = inflight.Marker.create(state, plan, base, archive, key, plan.scrub_parameters)
        run_dir = marker.run_dir  # private: the in-flight notebook is not scrubbed yet
        resume.hand_over(plan.request.resume, run_dir, archive)  # the steps its kernel may skip
        supervisor = Supervisor(plan.timeout)
        # With the archive, wherever it is: a freeze made on another machine interrupts this run.
        if freezable:
            supervisor.stop_when = freeze.watcher(plan.env.name, archive, every=1.0 if folder is not None else 2.0)
        failed: list[int] = []

        def on_cell(event: str, index: int, total: int, cell: Any) -> None:
            if event == "start" and index == 0:
                marker.note_kernel(supervisor.kernel_pid())
            if event == "failed":
                failed.append(index)
            if progress is not None:
                progress(event, index, total, cell)

        ran = _Ran(failed, time.monotonic())
        with supervisor.handling_signals():
            _run(plan, run_dir, project, supervisor, on_cell, ran)
            try:
                done, clean_nb, html = _evidence(plan, base, run_dir, supervisor, project, ran)
                attachments: Path | None = run_dir / "attachments"
            except Exception as problem:  # whatever broke, the run still leaves its record
                done, clean_nb, html, attachments = _fallback_record(plan, base, ran, problem), None, None, None
            link = bundle_dir(archive, plan.run_id) if folder is not None else f"{archive}/runs/{plan.run_id}"
            notify.notify_run(plan.env, done, link, plan.redactor, project)
            try:
                marker.note_outcome(done)  # archiving may be cut short: the next command then finishes it
                bundle = archive_run(archive, key, done, plan.redactor, run_dir / STAGING, notebook=clean_nb,
                                     html=html, attachments=attachments, on_manifest=marker.note_manifest)
            except OSError as exc:  # e.g. a full disk: nothing half-written is left, the marker keeps the run
                raise EvidenceError(f"run {plan.run_id} ended {done['status']} but could not be archived: {exc}",
                                    "free space, then run any drillbook command: it archives the run "
                                    "with this status") from None
            except EvidenceError as exc:  # e.g. the object store went away mid-upload: the marker keeps the run
                raise EvidenceError(f"run {plan.run_id} ended {done['status']} but could not be archived: "
                                    f"{exc.message}", "fix the cause, then run any drillbook command: it "
                                    "uploads the run again with this status") from None
        marker.finish()
    return Outcome(plan.run_id, done["status"], done["reason"], bundle, done)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def run(request: RunRequest, progress: ProgressFn | None = None, project: Path | None = None) -> Outcome:
    project = project or paths.project_root()
    inflight.recover_aborted(project)
    return execute(prepare(request, project), progress, project)
