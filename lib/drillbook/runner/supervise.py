"""Supervised execution: papermill in a worker thread, watched from the calling thread.

    Supervisor      interrupts the kernel at the deadline or on a signal (its cleanups then run),
                    and kills it if it has not stopped after the grace period
    run_supervised  one notebook (a ``KernelJob``) executed in a kernel of its own, with a private
                    transport and its output to a private log; used by a run and by a child run alike
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

from .. import files
from ..journal import RUN_DIR_VAR

if TYPE_CHECKING:
    from traitlets.config import Config

KERNEL_LOG = "kernel.log"  # the kernel process's stdout and stderr, in the private run folder
CLEANUP_GRACE = 120.0  # after a timeout or abort, how long the kernel gets to run its cleanups
ProgressFn = Callable[[str, int, int, Any], None]  # event, cell index, cell count, the cell


@dataclass
class KernelJob:
    """One notebook for papermill to execute in a kernel of its own."""

    source: Path
    output: Path
    parameters: dict[str, Any]
    kernel_name: str | None  # None: the notebook's own kernelspec
    run_dir: Path  # private: the kernel's sockets, its log and its journal live there
    project: Path


class Supervisor:
    """Watches a run from the main thread: interrupts the kernel at the deadline or on a signal
    (its cleanups then run), and kills it if it has not stopped after the grace period.

    Only signals to the kernel's pid, so it needs no access to papermill's event loop.
    """

    def __init__(self, timeout: float, grace: float = CLEANUP_GRACE) -> None:
        self.timeout, self.grace = timeout, grace
        self.reason: str | None = None  # "timeout" or "aborted"
        self.client: object | None = None  # the notebook client, once papermill has built it
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
            files.kill(pid, sig)  # gone (its pid maybe reused): nothing to stop

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
        """Wait for the worker, interrupting the kernel at the deadline (see ``tick``).

        Where no handler of ours catches SIGINT (a child run inside a drill's kernel), the
        KeyboardInterrupt it raises here is an abort too: the kernel is interrupted, its cleanups
        get their grace, and the interrupt is raised again once the worker has ended."""
        interrupted = False
        try:
            while worker.is_alive():
                try:
                    worker.join(0.1)
                except KeyboardInterrupt:
                    interrupted = True
                    self.interrupt("aborted")
                self.tick()
        finally:
            self._finished = True  # and the kernel's pid may soon belong to another process
        if interrupted:
            raise KeyboardInterrupt


def _private_kernel_config(run_dir: Path) -> Config:
    from traitlets.config import Config  # with jupyter's start-up cost: only when a kernel starts

    # IPC sockets inside the private run folder: kernel traffic (which may carry secrets)
    # never crosses a TCP port that other local users could connect to.
    return Config({"KernelManager": {"transport": "ipc", "ip": str(run_dir / "kernel")}})


# papermill imports pyarrow (and with it numpy) when installed, for hdfs:// paths: about 100 ms
# of a run's start-up, for a backend a run never uses (it reads and writes local files only).
UNUSED_PAPERMILL_BACKENDS = ("pyarrow.fs",)


@contextmanager
def _absent(modules: tuple[str, ...]) -> Iterator[None]:
    """While papermill is imported, ``import`` of these raises ImportError, which papermill takes
    as the backend not being installed; afterwards they import normally again."""
    blocked = [name for name in modules if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not importable"
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]


def import_runner() -> None:
    """Import, in the calling (main) thread, every module the papermill worker needs.

    Imports are not safe across threads for packages that import each other: the worker importing
    papermill (nbclient, jupyter_client) while the HTML warm-up imports nbconvert (which imports
    them too) can leave each holding a module half-initialised that the other needs; Python then
    hands one of them the partial module and the import fails ("cannot import name
    'AsyncKernelManager' from partially initialized module 'jupyter_client.manager'"). So the
    worker and the warm-up start only once these are imported.
    """
    with _absent(UNUSED_PAPERMILL_BACKENDS):
        import papermill  # noqa: F401

    from . import engine  # noqa: F401  (imports papermill's engines: slow, and only a run needs them)

    try:  # jupyter_client imports these lazily to find the native python3 kernel, in the worker
        import ipykernel.kernelspec  # noqa: F401
        import IPython.paths  # noqa: F401
    except ImportError:  # a kernel of another language: jupyter_client does without them too
        pass


def _run_papermill(job: KernelJob, supervisor: Supervisor, on_cell: ProgressFn | None,
                   kernel_output: IO[bytes]) -> BaseException | None:
    try:  # every failure still produces evidence, with its real reason
        # papermill is imported here, not at the top: it is slow to import and most commands never run a kernel
        import papermill

        from . import engine  # registers the engine, importing papermill's: as slow

        papermill.execute_notebook(
            str(job.source), str(job.output), parameters=job.parameters, engine_name=engine.ENGINE_NAME,
            kernel_name=job.kernel_name, progress_bar=False,
            log_output=False, cwd=str(job.source.parent), start_timeout=60, on_cell=on_cell,
            on_client=lambda client: setattr(supervisor, "client", client),
            config=_private_kernel_config(job.run_dir), kernel_output=kernel_output,
        )
        return None
    except BaseException as exc:
        return exc


def _execute_in_thread(job: KernelJob, supervisor: Supervisor, on_cell: ProgressFn | None,
                       kernel_output: IO[bytes]) -> BaseException | None:
    """Run papermill in a worker thread, so the main thread stays free to supervise and
    to receive signals (nbclient would otherwise install its own SIGINT/SIGTERM handlers)."""
    result: list[BaseException | None] = []
    worker = threading.Thread(
        target=lambda: result.append(_run_papermill(job, supervisor, on_cell, kernel_output)),
        name="drillbook-papermill", daemon=True,
    )
    worker.start()
    supervisor.watch(worker)
    return result[0] if result else RuntimeError("the papermill worker ended without a result")


def run_supervised(job: KernelJob, supervisor: Supervisor, on_cell: ProgressFn | None = None) -> BaseException | None:
    """Execute ``job`` under ``supervisor``: the kernel gets the run's variables, the private
    transport and a log file of its own (``KERNEL_LOG``) for its stdout and stderr. Returns the
    failure to record, never raises one (``import_runner`` must have run in this thread)."""
    with _patched_environ(_kernel_env(job.run_dir, job.project)), \
            open(job.run_dir / KERNEL_LOG, "wb") as kernel_output:
        return _execute_in_thread(job, supervisor, on_cell, kernel_output)


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

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
