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
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import nbformat

from . import catalog, environments, inflight, journal, keys, locks, notebooks, paths, record, scraps
from .drill import RUN_DIR_VAR, operator_name
from .environments import Environment
from .errors import DrillbookError, EvidenceError, NotebookError, UnreachableHost
from .render import HtmlRenderer
from .secrets import Redactor, SecretRef, is_secret_ref

DEFAULT_TIMEOUT = 1800.0
KERNEL_LOG = "kernel.log"  # the kernel process's stdout and stderr, in the private run folder
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
    preflight: bool = True


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
    kernel_name: str
    scrub_parameters: dict[str, Any] = field(default_factory=dict)  # with defaults: what the redactor resolved


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


def _secret_refs(env: Environment, parameters: dict[str, Any]) -> dict[str, SecretRef]:
    """The environment's secret references and those among the run's parameter values
    (``parameters`` includes the notebook's own defaults: a default may be a reference too)."""
    refs = dict(env.secret_refs())
    refs.update({f"parameters.{k}": SecretRef.parse(v) for k, v in parameters.items() if is_secret_ref(v)})
    return refs


def _with_defaults(declared: dict[str, notebooks.Parameter], parameters: dict[str, Any]) -> dict[str, Any]:
    return {**{name: p.default for name, p in declared.items()}, **parameters}


def build_redactor(env: Environment, parameters: dict[str, Any], project: Path) -> Redactor:
    """Resolve every secret the run could touch, in memory, so the runner knows what to scrub.

    A secret that cannot be resolved is bad input: the run could not be proven leak-free.
    """
    redactor = Redactor()
    for name, ref in _secret_refs(env, parameters).items():
        redactor.add(name, ref.resolve(project))
    return redactor


def _child_parameters(attachments: Path) -> dict[str, Any]:
    """Parameters (given and default) of the notebooks a drill ran as children: they may hold
    secret references the parent never saw."""
    found: dict[str, Any] = {}
    for path in sorted(attachments.glob("*.ipynb")) if attachments.is_dir() else []:
        try:
            nb = notebooks.read_notebook(path)
            declared = notebooks.declared_parameters(nb, path.name)
        except DrillbookError:
            continue
        given = nb.metadata.get("papermill", {}).get("parameters", {})
        found.update({f"{path.stem}.{k}": v for k, v in _with_defaults(declared, given).items()})
    return found


def refresh_redactor(redactor: Redactor, env: Environment, parameters: dict[str, Any], project: Path,
                     attachments: Path | None = None, kernel_journal: dict[str, Any] | None = None) -> None:
    """Add the secrets' values as they are now: a rotation drill changes them during the run,
    and both the old and the new value must be scrubbed; so must child notebooks' secrets and
    those a cell resolved with ``drill.secret`` (the kernel journals their references)."""
    if attachments is not None:
        parameters = {**parameters, **_child_parameters(attachments)}
    refs = _secret_refs(env, parameters)
    for text in journal.secret_refs(kernel_journal):
        try:
            refs.setdefault(text, SecretRef.parse(text))
        except DrillbookError:
            continue  # not a reference: the kernel never resolved it either
    for name, ref in refs.items():
        try:
            redactor.add(name, ref.resolve(project))
        except DrillbookError:
            pass  # gone after the run (e.g. a scratch secret): its old value is still scrubbed


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


def preflight(env: Environment) -> None:
    """Refuse to start when an SSH host of the environment does not even accept a TCP connection.

    Cheap and early: a run that cannot reach its hosts would only produce an error record.
    Skippable (``--skip-preflight``) for incident runbooks meant to work around a dead host.
    """
    for name, host in env.hosts.items():
        if host.shell != "ssh" or host.optional:
            continue
        try:
            socket.create_connection((host.address, host.port), timeout=min(host.connect_timeout, 5.0)).close()
        except OSError as exc:
            raise UnreachableHost(
                f"host {name} ({host.address}:{host.port}) of environment {env.name!r} is unreachable: "
                f"{exc.strerror or exc}",
                "check that the host is up (for the lab: drillbook lab up), or pass --skip-preflight "
                "to run anyway and record the failure as evidence",
            ) from None


def prepare(request: RunRequest, project: Path | None = None) -> Plan:
    project = project or paths.project_root()
    path, entry = catalog.find(request.target, project)
    nb = notebooks.read_notebook(path)
    declared = notebooks.declared_parameters(nb, path.name)
    env = environments.load_environment(request.env, project)
    name = entry.name if entry else path.stem
    parameters = _merge_parameters(request, declared, name, env, path)
    scrub_parameters = _with_defaults(declared, parameters)
    redactor = build_redactor(env, scrub_parameters, project)
    if request.preflight:
        preflight(env)
    run_id = new_run_id(name, env.name)
    if "run_id" in declared:
        parameters["run_id"] = run_id
    timeout = request.timeout or (entry.meta.timeout_seconds if entry else DEFAULT_TIMEOUT)
    kernel_name = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    return Plan(path, name, entry, env, parameters, redactor, run_id, float(timeout), request, kernel_name,
                scrub_parameters)


# --------------------------------------------------------------------------- supervision
class Supervisor:
    """Watches a run from the main thread: interrupts the kernel at the deadline or on a signal
    (its cleanups then run), and kills it if it has not stopped after the grace period.

    Only signals to the kernel's pid, so it needs no access to papermill's event loop.
    """

    def __init__(self, timeout: float, grace: float = CLEANUP_GRACE) -> None:
        self.timeout, self.grace = timeout, grace
        self.reason: str | None = None  # "timeout" or "aborted"
        self.client: Any = None
        self._deadline = time.monotonic() + timeout
        self._kill_at: float | None = None
        self._finished = False  # the worker has ended: a signal now only waits for the archive

    def kernel_pid(self) -> int | None:
        km = getattr(self.client, "km", None)
        provisioner = getattr(km, "provisioner", None)
        return getattr(provisioner, "pid", None)

    def _signal(self, sig: int) -> None:
        pid = self.kernel_pid()
        if pid:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):  # gone (its pid maybe reused): nothing to stop
                pass

    def interrupt(self, reason: str) -> None:
        if self._finished:  # the run is over and being archived: let the bundle be written
            return
        if self.reason is None:
            self.reason = reason
            self._kill_at = time.monotonic() + self.grace
            self._signal(signal.SIGINT)  # KeyboardInterrupt in the cell: the drill's cleanups run
        else:  # asked twice: stop waiting for cleanups
            self._kill_at = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if self.reason is None and now >= self._deadline:
            self.interrupt("timeout")
        elif self._kill_at is not None and now >= self._kill_at:
            self._signal(signal.SIGKILL)
            self._kill_at = None

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """For the whole run, archive included, SIGINT/SIGTERM interrupt the kernel instead of
        killing the runner: a signal while the bundle is written must not leave no bundle."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.interrupt("aborted"))
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def watch(self, worker: threading.Thread) -> None:
        """Wait for the worker, interrupting the kernel at the deadline (see ``tick``)."""
        try:
            while worker.is_alive():
                worker.join(0.1)
                self.tick()
        finally:
            self._finished = True  # and the kernel's pid may soon belong to another process


# --------------------------------------------------------------------------- execute
def _private_kernel_config(run_dir: Path) -> Any:
    from traitlets.config import Config

    # IPC sockets inside the private run folder: kernel traffic (which may carry secrets)
    # never crosses a TCP port that other local users could connect to.
    return Config({"KernelManager": {"transport": "ipc", "ip": str(run_dir / "kernel")}})


def import_runner() -> None:
    """Import, in the calling (main) thread, every module the papermill worker needs.

    Imports are not safe across threads for packages that import each other: the worker importing
    papermill (nbclient, jupyter_client) while the HTML warm-up imports nbconvert (which imports
    them too) can leave each holding a module half-initialised that the other needs; Python then
    hands one of them the partial module and the import fails ("cannot import name
    'AsyncKernelManager' from partially initialized module 'jupyter_client.manager'"). So the
    worker and the warm-up start only once these are imported.
    """
    import papermill  # noqa: F401

    from . import engine  # noqa: F401

    try:  # jupyter_client imports these lazily to find the native python3 kernel, in the worker
        import ipykernel.kernelspec  # noqa: F401
        import IPython.paths  # noqa: F401
    except ImportError:  # a kernel of another language: jupyter_client does without them too
        pass


def _run_papermill(plan: Plan, output: Path, run_dir: Path, supervisor: Supervisor, on_cell: ProgressFn,
                   kernel_output: IO[bytes]) -> BaseException | None:
    try:  # every failure still produces evidence, with its real reason
        import papermill

        from . import engine

        papermill.execute_notebook(
            str(plan.path), str(output), parameters=plan.parameters, engine_name=engine.ENGINE_NAME,
            kernel_name=plan.kernel_name, progress_bar=False,
            log_output=False, cwd=str(plan.path.parent), start_timeout=60, on_cell=on_cell,
            on_client=lambda client: setattr(supervisor, "client", client),
            config=_private_kernel_config(run_dir), kernel_output=kernel_output,
        )
        return None
    except BaseException as exc:
        return exc


def _execute_in_thread(plan: Plan, output: Path, run_dir: Path, supervisor: Supervisor,
                       on_cell: ProgressFn, kernel_output: IO[bytes]) -> BaseException | None:
    """Run papermill in a worker thread, so the main thread stays free to supervise and
    to receive signals (nbclient would otherwise install its own SIGINT/SIGTERM handlers)."""
    result: list[BaseException | None] = []
    worker = threading.Thread(
        target=lambda: result.append(_run_papermill(plan, output, run_dir, supervisor, on_cell, kernel_output)),
        name="drillbook-papermill", daemon=True,
    )
    worker.start()
    supervisor.watch(worker)
    return result[0] if result else RuntimeError("the papermill worker ended without a result")


def _kernel_env(run_dir: Path, project: Path) -> dict[str, str]:
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


def classify(exc: BaseException | None, supervisor_reason: str | None, kernel_journal: dict[str, Any] | None,
             timeout: float) -> tuple[str, str | None]:
    """The run's status and reason from what the runner saw and what the kernel journalled."""
    if supervisor_reason == "aborted":
        return "aborted", "interrupted by the operator or a signal"
    if supervisor_reason == "timeout":
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


def mark_failure(nb: Any, status: str, reason: str | None, failed_index: int | None = None) -> dict[str, Any] | None:
    """Tag the failing cell and put a banner on top, as papermill does for a raised exception.

    The failing cell is the one papermill marked, else the one the engine saw fail (a dead
    kernel), else one still marked running (a killed runner).
    """
    if status == "passed":
        return None
    failing = None
    for index, cell in enumerate(nb.cells):
        pm = cell.get("metadata", {}).get("papermill", {})
        if cell.cell_type == "code" and (pm.get("exception") or pm.get("status") == "running"):
            failing = (index, cell)
            break
    if failing is None and failed_index is not None and failed_index < len(nb.cells):
        failing = (failed_index, nb.cells[failed_index])
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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _runner_error(status: str, reason: str | None, what: str, exc: BaseException) -> tuple[str, str]:
    """A failure of the runner itself (not of the notebook) makes the run an error, keeping what
    the notebook's own outcome said; an aborted run stays aborted."""
    detail = f"{what}: {_describe(exc)}"
    combined = f"{reason}; {detail}" if reason else detail
    return ("aborted" if status == "aborted" else "error"), combined


def keep_kernel_output(run_dir: Path, redactor: Redactor, target: Path) -> None:
    """Archive what the kernel wrote to its stdout/stderr (``KERNEL_LOG`` in the run folder) as
    an attachment, scrubbed, if it wrote anything. Never printed: it was never scrubbed before."""
    try:
        data = (run_dir / KERNEL_LOG).read_bytes()
    except OSError:
        return
    if data.strip():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Decoded with replacement so the scrubber sees text: raw bytes would be archived unscrubbed.
        target.write_text(redactor.scrub(data.decode("utf-8", "replace")), encoding="utf-8")


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
    whatever happens, the run is archived). Everything is imported in this thread first, then
    the HTML warm-up and the papermill worker start (see ``import_runner``)."""
    try:
        import_runner()
    except Exception as exc:  # nothing can run; the page of the source notebook can still be built
        ran.exc = exc
    try:
        ran.renderer = HtmlRenderer()
        if ran.exc is None:
            with _patched_environ(_kernel_env(run_dir, project)), open(run_dir / KERNEL_LOG, "wb") as kernel_output:
                ran.exc = _execute_in_thread(plan, run_dir / "output.ipynb", run_dir, supervisor, on_cell,
                                             kernel_output)
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
        controls=list(entry.meta.controls) if entry else [], source=record.source_info(plan.path, project),
        operator=operator_name(),
    )
    with locks.hold(state, plan.env.name, plan.run_id, plan.request.wait):
        marker = inflight.Marker.create(state, plan, base, archive, key, plan.scrub_parameters)
        run_dir = marker.run_dir  # private: the in-flight notebook is not scrubbed yet
        supervisor = Supervisor(plan.timeout)
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
            try:
                marker.note_outcome(done)  # archiving may be cut short: the next command then finishes it
                bundle = evidence.record_run(archive, key, done, plan.redactor, notebook=clean_nb, html=html,
                                             attachments=attachments, on_manifest=marker.note_manifest)
            except OSError as exc:  # e.g. a full disk: nothing half-written is left, the marker keeps the run
                raise EvidenceError(f"run {plan.run_id} ended {done['status']} but could not be archived: {exc}",
                                    "free space, then run any drillbook command: it archives the run "
                                    "with this status") from None
        marker.finish()
    return Outcome(plan.run_id, done["status"], done["reason"], bundle, done)


def html_header(rec: dict[str, Any]) -> dict[str, Any]:
    """What the run-time HTML page shows above the notebook."""
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

    from . import engine

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
    # A short name: the child kernel's IPC sockets live in it, and a socket path is limited to 107 bytes.
    child_dir = Path(tempfile.mkdtemp(prefix="child-", dir=attachments.parent))
    output = attachments / f"{path.stem}.ipynb"
    error: str | None = None
    # The child kernel's stdout/stderr go to a file in its private folder, like the parent's.
    with _patched_environ({RUN_DIR_VAR: str(child_dir)}), open(child_dir / KERNEL_LOG, "wb") as kernel_output:
        try:
            papermill.execute_notebook(str(path), str(output), parameters=values, progress_bar=False,
                                       engine_name=engine.ENGINE_NAME, kernel_output=kernel_output,
                                       cwd=str(path.parent), kernel_name=nb.metadata.get("kernelspec", {}).get("name"),
                                       config=_private_kernel_config(child_dir))
        except Exception as exc:
            error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    keep_kernel_output(child_dir, parent.redactor, attachments / f"{path.stem}.{KERNEL_LOG}")
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
