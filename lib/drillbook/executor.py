"""The runner: one execution of a notebook against an environment, always leaving evidence.

    prepare()  validate everything before anything runs (bad input → exit 2, nothing written)
    execute()  lock the environment, run papermill in a private temp dir, watch the clock,
               then archive the bundle whatever happened, and only then report the status.

Statuses are a closed set: passed, failed (a check or objective failed), error (an exception,
a dead kernel, a timeout), aborted (interrupted, or killed: see ``inflight``).
"""
from __future__ import annotations

import os
import re
import secrets as pysecrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import nbformat

from . import catalog, environments, inflight, journal, keys, locks, notebooks, paths, record, scraps
from .drill import RUN_DIR_VAR, _operator
from .environments import Environment
from .errors import DrillbookError, NotebookError
from .render import HtmlRenderer
from .secrets import Redactor, SecretRef, is_secret_ref

DEFAULT_TIMEOUT = 1800.0
CLEANUP_GRACE = 120.0  # after a timeout or abort, how long the kernel gets to run its cleanups
ProgressFn = Callable[[str, int, int, Any], None]


@dataclass
class RunRequest:
    target: str  # catalog name or notebook path
    env: str
    parameters: dict[str, Any] = field(default_factory=dict)  # raw values (CLI strings or YAML)
    dry_run: bool = False
    approve: list[str] = field(default_factory=list)
    change: str | None = None
    timeout: float | None = None
    wait: float = 0.0


@dataclass
class Plan:
    """A validated request: what will run, where, with which parameters."""

    path: Path
    name: str
    entry: catalog.Entry | None
    env: Environment
    parameters: dict[str, Any]
    redactor: Redactor
    run_id: str
    timeout: float
    request: RunRequest


@dataclass
class Outcome:
    run_id: str
    status: str
    reason: str | None
    bundle: Path
    record: dict[str, Any]


# --------------------------------------------------------------------------- prepare
def new_run_id(name: str, env: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "notebook"
    return f"{stamp}-{slug}-{env}-{pysecrets.token_hex(3)}"


def build_redactor(env: Environment, parameters: dict[str, Any], project: Path) -> Redactor:
    """Resolve every secret the run could touch, in memory, so the runner knows what to scrub.

    A secret that cannot be resolved is bad input: the run could not be proven leak-free.
    """
    redactor = Redactor()
    refs = dict(env.secret_refs())
    refs.update({f"parameters.{k}": SecretRef.parse(v) for k, v in parameters.items() if is_secret_ref(v)})
    for name, ref in refs.items():
        redactor.add(name, ref.resolve(project))
    return redactor


def _merge_parameters(request: RunRequest, declared: dict[str, notebooks.Parameter], name: str,
                      env: Environment, path: Path) -> dict[str, Any]:
    runner = {"env": env.name, "dry_run": request.dry_run, "approve": list(request.approve),
              "change": request.change}
    values: dict[str, Any] = {}
    for origin, given in ((f"environment {env.name}", env.parameters.get(name, {})), ("-p", request.parameters)):
        for key, raw in given.items():
            if key not in declared:
                raise NotebookError(
                    f"{path.name} declares no parameter {key!r} (given by {origin})",
                    f"declared parameters: {', '.join(declared) or 'none'}",
                )
            if key in runner:
                raise NotebookError(f"parameter {key!r} is set by the runner",
                                    "use --env, --dry-run, --approve or --change instead")
            values[key] = notebooks.coerce_parameter(declared[key], raw, origin)
    # Only inject what the notebook declares: plain papermill notebooks need not know drillbook.
    values.update({k: v for k, v in runner.items() if k in declared})
    return values


def prepare(request: RunRequest, project: Path | None = None) -> Plan:
    project = project or paths.project_root()
    path, entry = catalog.find(request.target, project)
    nb = notebooks.read_notebook(path)
    declared = notebooks.declared_parameters(nb, path.name)
    env = environments.load_environment(request.env, project)
    name = entry.name if entry else path.stem
    parameters = _merge_parameters(request, declared, name, env, path)
    redactor = build_redactor(env, parameters, project)
    run_id = new_run_id(name, env.name)
    if "run_id" in declared:
        parameters["run_id"] = run_id
    timeout = request.timeout or (entry.meta.timeout_seconds if entry else DEFAULT_TIMEOUT)
    return Plan(path, name, entry, env, parameters, redactor, run_id, float(timeout), request)


# --------------------------------------------------------------------------- watchdog
class Watchdog:
    """Interrupts the kernel at the deadline (cleanups run), kills it if it does not stop in time.

    Works on the kernel's pid with signals only, so it is safe from any thread and from the
    runner's own signal handlers.
    """

    def __init__(self, km: Any, timeout: float, grace: float = CLEANUP_GRACE) -> None:
        self.km, self.timeout, self.grace = km, timeout, grace
        self.reason: str | None = None  # "timeout" or "aborted"
        self._stop = threading.Event()
        self._deadline = time.monotonic() + timeout
        self._kill_at: float | None = None
        self._thread = threading.Thread(target=self._watch, name="drillbook-watchdog", daemon=True)
        self._thread.start()

    def kernel_pid(self) -> int | None:
        provisioner = getattr(self.km, "provisioner", None)
        return getattr(provisioner, "pid", None) if provisioner else None

    def _signal(self, sig: int) -> None:
        pid = self.kernel_pid()
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def interrupt(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._kill_at = time.monotonic() + self.grace
            self._signal(signal.SIGINT)
        else:  # asked twice: stop waiting for cleanups
            self._kill_at = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            if self.reason is None and now >= self._deadline:
                self.interrupt("timeout")
            elif self._kill_at is not None and now >= self._kill_at:
                self._signal(signal.SIGKILL)
                self._kill_at = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class _AbortSignals:
    """While a run executes, SIGINT/SIGTERM interrupt the kernel (cleanups run) instead of the runner."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _AbortSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda *_: self.watchdog.interrupt("aborted"))
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- execute
def _kernel_manager(nb: Any, run_dir: Path) -> Any:
    from jupyter_client import KernelManager

    name = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    # IPC sockets inside the private run folder: kernel traffic (which may carry secrets)
    # never crosses a TCP port other local users could connect to.
    return KernelManager(kernel_name=name, transport="ipc", ip=str(run_dir / "kernel"))


def _run_papermill(plan: Plan, output: Path, km: Any, progress: ProgressFn | None) -> BaseException | None:
    import papermill

    from . import engine

    try:
        papermill.execute_notebook(
            str(plan.path), str(output), parameters=plan.parameters, engine_name=engine.ENGINE_NAME,
            kernel_name=km.kernel_name, progress_bar=False, log_output=False, cwd=str(plan.path.parent),
            km=km, on_cell=progress, start_timeout=60,
        )
        return None
    except Exception as exc:  # every failure still produces evidence
        return exc


def _shutdown(km: Any) -> None:
    try:
        if km.has_kernel:
            km.shutdown_kernel(now=False)
    except Exception:
        try:
            km.shutdown_kernel(now=True)
        except Exception:
            pass


def _kernel_env(plan: Plan, run_dir: Path, project: Path) -> dict[str, str]:
    return {RUN_DIR_VAR: str(run_dir), "DRILLBOOK_PROJECT": str(project), "PYTHONUNBUFFERED": "1"}


class _patched_environ:
    """Set variables for the kernel we are about to start; restore them afterwards."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: Any) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def classify(exc: BaseException | None, watchdog_reason: str | None, kernel_journal: dict[str, Any] | None,
             timeout: float) -> tuple[str, str | None]:
    """The run's status and reason from what the runner saw and what the kernel journalled."""
    if watchdog_reason == "aborted":
        return "aborted", "interrupted by the operator or a signal"
    if watchdog_reason == "timeout":
        return "error", f"execution timeout: the notebook ran longer than {timeout:g} s"
    status = (kernel_journal or {}).get("status")
    if status in journal.STATUSES:
        return status, kernel_journal.get("reason")  # type: ignore[union-attr]
    if exc is not None:
        if type(exc).__name__ == "DeadKernelError":
            return "error", "the kernel died during execution"
        ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
        if ename:
            return "error", f"{ename}: {evalue}"
        return "error", f"{type(exc).__name__}: {exc}"
    if kernel_journal:  # drill API used but finish() never called: judge what was recorded
        failed = [c["name"] for c in kernel_journal.get("checks", []) if not c.get("passed")]
        if failed:
            return "failed", f"check failed: {', '.join(failed)}"
    return "passed", None


def mark_failure(nb: Any, status: str, reason: str | None) -> dict[str, Any] | None:
    """Tag the failing cell and put a banner on top, as papermill does for a raised exception."""
    if status == "passed":
        return None
    failing = None
    for index, cell in enumerate(nb.cells):
        pm = cell.get("metadata", {}).get("papermill", {})
        if cell.cell_type == "code" and (pm.get("exception") or pm.get("status") == "running"):
            failing = (index, cell)
            break
    info = None
    if failing is not None:
        index, cell = failing
        tags = cell.metadata.setdefault("tags", [])
        if "drillbook-failed-cell" not in tags:
            tags.append("drillbook-failed-cell")
        info = {"index": index, "execution_count": cell.get("execution_count"),
                "source_first_line": (cell.source.splitlines() or [""])[0][:200]}
    where = f" Failing cell: In [{info['execution_count']}] (cell {info['index']})." if info else ""
    banner = nbformat.v4.new_markdown_cell(
        f'<span style="color:red">**drillbook: this run ended `{status}`** — {reason or "no reason recorded"}.{where}</span>'
    )
    banner.metadata["tags"] = ["drillbook-status"]
    nb.cells.insert(0, banner)
    return info


def _load_output(output: Path, plan: Plan) -> Any:
    try:
        return nbformat.read(str(output), as_version=4)
    except (OSError, ValueError):
        return notebooks.read_notebook(plan.path)  # the kernel never started: archive the source


def execute(plan: Plan, progress: ProgressFn | None = None, project: Path | None = None,
            archive: Path | None = None, state: Path | None = None) -> Outcome:
    from . import evidence

    project = project or paths.project_root()
    archive = archive or paths.archive_root(project)
    state = state or paths.state_dir(project)
    key = keys.load_or_create_signing_key()  # fail before running if the key is unusable
    entry = plan.entry
    base = record.base_record(
        run_id=plan.run_id, drill=plan.name, kind=entry.kind if entry else "notebook",
        title=entry.meta.title if entry else plan.path.stem, notebook=_relative(plan.path, project),
        env=plan.env, parameters=plan.parameters, dry_run=plan.request.dry_run,
        approve=list(plan.request.approve), change=plan.request.change,
        controls=list(entry.meta.controls) if entry else [], source=record.source_info(plan.path),
        operator=_operator(),
    )
    with locks.hold(state, plan.env.name, plan.run_id, plan.request.wait):
        renderer = HtmlRenderer()
        run_dir = Path(tempfile.mkdtemp(prefix="drillbook-run-"))  # 0700: the in-flight notebook is private
        marker = inflight.write_marker(state, plan, base, run_dir, archive)
        t0 = time.monotonic()
        km = _kernel_manager(notebooks.read_notebook(plan.path), run_dir)
        watchdog = Watchdog(km, plan.timeout)
        output = run_dir / "output.ipynb"

        def on_cell(event: str, index: int, total: int, cell: Any) -> None:
            if event == "start" and index == 0:
                inflight.note_kernel(marker, watchdog.kernel_pid())
            if progress is not None:
                progress(event, index, total, cell)

        try:
            with _patched_environ(_kernel_env(plan, run_dir, project)), _AbortSignals(watchdog):
                exc = _run_papermill(plan, output, km, on_cell)
        finally:
            watchdog.stop()
            _shutdown(km)
        kernel_journal = journal.read_journal(run_dir)
        status, reason = classify(exc, watchdog.reason, kernel_journal, plan.timeout)
        nb = _load_output(output, plan)
        failing = mark_failure(nb, status, reason)
        done = record.complete_record(
            base, status=status, reason=reason, seconds=time.monotonic() - t0, kernel_journal=kernel_journal,
            failing_cell=failing, results=scraps.read_scraps(nb).get(scraps.RESULTS_SCRAP),
        )
        done["versions"]["kernel_python"] = nb.metadata.get("language_info", {}).get("version")
        clean_nb = plan.redactor.scrub_obj(nb)
        html = renderer.render(nbformat.from_dict(clean_nb), _header(done))
        bundle = evidence.record_run(archive, key, done, plan.redactor, notebook=clean_nb, html=html,
                                     attachments=run_dir / "attachments")
        inflight.remove_marker(marker)
        shutil.rmtree(run_dir, ignore_errors=True)
    return Outcome(plan.run_id, status, reason, bundle, done)


def _header(rec: dict[str, Any]) -> dict[str, Any]:
    return {"title": rec["title"], "status": rec["status"], "reason": rec["reason"], "run": rec["run_id"],
            "environment": rec["env"], "started": rec["started_at"], "finished": rec["finished_at"],
            "operator": rec["operator"], "dry run": rec["dry_run"], "change": rec["change"],
            "source sha256": rec["source"]["sha256"], "git commit": rec["source"]["git_commit"]}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def run(request: RunRequest, progress: ProgressFn | None = None, project: Path | None = None) -> Outcome:
    project = project or paths.project_root()
    inflight.recover_aborted(project)
    return execute(prepare(request, project), progress, project)


# --------------------------------------------------------------------------- child runs
def run_child(parent: Any, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Run a catalogued notebook from inside a drill's kernel (see ``Drill.run_notebook``).

    Same environment, dry-run, approvals and change reference as the parent; no lock (the parent
    holds it) and no ledger entry (the executed copy is archived in the parent's attachments).
    """
    import papermill

    project = parent.project
    path, entry = catalog.find(name, project)
    nb = notebooks.read_notebook(path)
    declared = notebooks.declared_parameters(nb, path.name)
    request = RunRequest(target=name, env=parent.env.name, parameters=parameters, dry_run=parent.dry_run,
                         approve=sorted(parent.approved), change=parent.change)
    values = _merge_parameters(request, declared, path.stem, parent.env, path)
    if "run_id" in declared:
        values["run_id"] = f"{parent.run_id}.{path.stem}"
    attachments = parent.attachments_dir() or Path(tempfile.mkdtemp(prefix="drillbook-child-"))
    child_dir = Path(tempfile.mkdtemp(prefix=f"{path.stem}-", dir=attachments.parent))
    output = attachments / f"{path.stem}.ipynb"
    error: str | None = None
    with _patched_environ({RUN_DIR_VAR: str(child_dir)}):
        try:
            papermill.execute_notebook(str(path), str(output), parameters=values, progress_bar=False,
                                       cwd=str(path.parent), kernel_name=nb.metadata.get("kernelspec", {}).get("name"))
        except Exception as exc:
            error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    child = journal.read_journal(child_dir) or {}
    shutil.rmtree(child_dir, ignore_errors=True)
    status = child.get("status") if child.get("status") in journal.STATUSES else ("error" if error else "passed")
    result = {"name": path.stem, "notebook": f"attachments/{output.name}", "status": status,
              "reason": child.get("reason") or error, "steps": child.get("steps", []),
              "checks": child.get("checks", []), "measures": child.get("measures", []),
              "started_at": child.get("started_at"), "finished_at": child.get("finished_at")}
    if parent.run_dir is not None:
        journal.write_json_atomic(attachments / f"{path.stem}.journal.json", parent.redactor.scrub_obj(result))
    return result
