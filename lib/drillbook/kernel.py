"""The kernel side of a drill: the IPython ``post_run_cell`` hook and the scrubbing of every message
the kernel sends.

This module knows IPython and the kernel's session, never the drill: ``drill.py`` hands it the
function to call when a cell fails and the redactor of each drill it starts. Outside IPython
(plain Python, tests) every function here does nothing.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Callable

from .config.secrets import Redactor

if TYPE_CHECKING:  # annotations only: IPython is there only when a kernel runs the drill
    from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

CellFailed = Callable[[BaseException], None]

# What to do when a cell raises (or is interrupted): close the current run. Set by ``hook``.
_on_cell_error: CellFailed | None = None

# Every drill started in this kernel: its secrets stay scrubbed from the kernel's output even after
# it closed (a later cell may still print a value it resolved).
_output_redactors: list[Redactor] = []


def ipython() -> InteractiveShell | None:
    """The running IPython shell, or None; never imports IPython (it is loaded only in a kernel)."""
    module = sys.modules.get("IPython")
    return module.get_ipython() if module else None


# --------------------------------------------------------------------- the post_run_cell hook
def _post_run_cell(result: ExecutionResult) -> None:
    """IPython hook: a cell raised (or was interrupted) → hand the error to the drill."""
    error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
    if error is not None and _on_cell_error is not None:
        _on_cell_error(error)


def hook(on_cell_error: CellFailed) -> None:
    """Call ``on_cell_error`` with the exception of every cell that fails from now on."""
    global _on_cell_error
    _on_cell_error = on_cell_error
    ip = ipython()
    if ip is not None and _post_run_cell not in ip.events.callbacks["post_run_cell"]:
        ip.events.register("post_run_cell", _post_run_cell)


def unhook() -> None:
    """Stop watching cells (the run is closed)."""
    ip = ipython()
    if ip is not None and _post_run_cell in ip.events.callbacks["post_run_cell"]:
        ip.events.unregister("post_run_cell", _post_run_cell)


def interrupt_cell() -> None:
    """Interrupt the code the main thread runs, from another thread, as a person pressing Stop
    would (a real SIGINT, so a blocking call wakes up). Only while Python handles SIGINT: an idle
    kernel ignores it, and a process that would die of it is left alone."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


# --------------------------------------------------------------------- the kernel's output
def _scrub_output(data: object) -> object:
    for redactor in _output_redactors:
        data = redactor.scrub_obj(data)
    return data


def scrub_kernel_output(redactor: Redactor) -> None:
    """Scrub every message this kernel sends (stream output, display data, results, errors and
    replies) with ``redactor`` as well as the redactors of earlier drills.

    The kernel's session is the one way out for everything a cell prints or displays, so a
    secret a drill resolved never reaches the notebook even when the runner cannot scrub it
    afterwards: its value changed before the runner resolved it again (a rotation), or the
    runner never heard of it (a key made in the kernel), or no runner is involved (JupyterLab).
    Outside a kernel (plain Python, tests) there is nothing to scrub here.
    """
    session = getattr(getattr(ipython(), "kernel", None), "session", None)
    if session is None:
        return
    _output_redactors.append(redactor)
    original = session.send
    if getattr(original, "drillbook_scrubs", False):
        return

    def send(stream: object, msg_or_type: dict[str, object] | str | None, content: object = None,
             *args: object, **kwargs: object) -> object:
        if isinstance(msg_or_type, dict):  # a message built before sending (streams, displays)
            msg_or_type = {**msg_or_type, "content": _scrub_output(msg_or_type.get("content")),
                           "metadata": _scrub_output(msg_or_type.get("metadata", {}))}
        return original(stream, msg_or_type, _scrub_output(content), *args, **kwargs)

    send.drillbook_scrubs = True  # type: ignore[attr-defined]
    session.send = send
