"""A runbook started ahead of the fault and held at its first step (``Drill.hold_notebook``).

``HeldChild`` runs ``child.run_child`` in a thread of the drill's kernel; before the child's
kernel starts it creates the hold file (``drillbook.hold``), so the child imports, loads its
environment and connects, then waits at its first step. ``wait_holding`` blocks until it is
there, ``release`` lets it go (right after the fault), ``result`` waits for its journal. A drill
interrupted meanwhile (SIGINT in the cell waiting in ``result``) interrupts the child too, and
``cancel`` (the drill's cleanup) stops a child that was never released.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import hold
from ..errors import DrillbookError
from .child import ChildContext, run_child
from .supervise import Supervisor, import_runner


class HeldChildError(DrillbookError):
    """A runbook started ahead of the fault did not reach its first step."""

    exit_code = 1


class HeldChild:
    def __init__(self, parent: ChildContext, name: str, parameters: dict[str, Any],
                 on_result: Callable[[dict[str, Any]], object] | None = None) -> None:
        self.name = name
        self._on_result = on_result  # called once with the result (in the drill's thread), also after cancel
        self._parent, self._parameters = parent, parameters
        self._run_dir: Path | None = None
        self._supervisor: Supervisor | None = None
        self._prepared = threading.Event()
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"drillbook-held-{name}", daemon=True)
        self.released_at: float | None = None

    def start(self) -> HeldChild:
        import_runner()  # in this (the kernel's main) thread, before the worker starts
        self._thread.start()
        if not self._prepared.wait(120) and self._error is None:
            raise HeldChildError(f"runbook {self.name} was not prepared within 120 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            self._result = run_child(self._parent, self.name, self._parameters, on_prepared=self._on_prepared)
        except BaseException as exc:  # handed to the drill's thread by start() or result()
            self._error = exc
        finally:
            self._prepared.set()

    def _on_prepared(self, run_dir: Path, supervisor: Supervisor) -> None:
        (run_dir / hold.HOLD).touch()
        self._run_dir, self._supervisor = run_dir, supervisor
        self._prepared.set()

    def wait_holding(self, timeout: float = 120.0) -> float:
        """Until the child's kernel waits at its first step; returns the seconds it took."""
        t0 = time.monotonic()
        while self._run_dir is not None and not (self._run_dir / hold.HOLDING).exists():
            if not self._thread.is_alive():
                return round(time.monotonic() - t0, 3)  # it ended before its first step: result() says why
            if time.monotonic() - t0 > timeout:
                raise HeldChildError(f"runbook {self.name} did not reach its first step within {timeout:g} s",
                                     "read its kernel log in the evidence's attachments")
            time.sleep(0.01)
        return round(time.monotonic() - t0, 3)

    def release(self) -> None:
        if self.released_at is None and self._run_dir is not None:
            self.released_at = time.monotonic()
            (self._run_dir / hold.HOLD).unlink(missing_ok=True)

    def result(self) -> dict[str, Any]:
        """Release the child if not yet done, wait for it, and return its result (as ``run_child``)."""
        self.release()
        try:
            while self._thread.is_alive():
                self._thread.join(0.1)
        except KeyboardInterrupt:  # the drill was interrupted: so is its runbook, whose cleanups run
            self.cancel()
            raise
        if self._error is not None:
            raise self._error
        assert self._result is not None
        self._adopt()
        return self._result

    def _adopt(self) -> None:
        if self._on_result is not None and self._result is not None:
            callback, self._on_result = self._on_result, None
            callback(self._result)

    def cancel(self) -> str:
        """Stop a child still running (interrupted: its cleanups run); nothing if it has ended."""
        what = "had ended"
        if self._thread.is_alive():
            if self._supervisor is not None:
                self._supervisor.interrupt("aborted")
            self.release()
            self._thread.join(timeout=180)
            what = "interrupted"
        self._adopt()  # its executed copy belongs to the evidence either way
        return f"{self.name} {what}"
