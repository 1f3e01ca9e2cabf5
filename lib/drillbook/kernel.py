"""The kernel side of a drill: the IPython cell hooks, the scrubbing of every message the kernel
sends (and, for an interactive run, handing those outputs to its cell journal), and keeping the
values drill calls return from being echoed under a cell.

This module knows IPython and the kernel's session, never the drill: ``drill.py`` hands it the
function to call when a cell fails and the redactor of each drill it starts. Outside IPython
(plain Python, tests) every function here does nothing.
"""
from __future__ import annotations

import ast
import errno
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Callable

from .config.secrets import Redactor

if TYPE_CHECKING:  # annotations only: IPython is there only when a kernel runs the drill
    from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

CellFailed = Callable[[BaseException], None]
CellStarted = Callable[[str, "int | None"], None]  # source, execution count
CellEnded = Callable[["int | None", bool], None]  # execution count, failed
OutputSent = Callable[[str, dict], None]  # message type, scrubbed content

# What to do when a cell raises (or is interrupted): close the current run. Set by ``hook``.
_on_cell_error: CellFailed | None = None

# Every drill started in this kernel: its secrets stay scrubbed from the kernel's output even after
# it closed (a later cell may still print a value it resolved).
_output_redactors: list[Redactor] = []

# An interactive run's cell journal (``watch_cells``), and what it hears of the kernel's output.
_on_cell_start: CellStarted | None = None
_on_cell_end: CellEnded | None = None
_on_output: OutputSent | None = None

# Values a drill call returned in the running cell: never echoed as the cell's result (a bare
# ``0.133`` under a step, a large dict after ``finish()``).
_quiet: list[object] = []


def ipython() -> InteractiveShell | None:
    """The running IPython shell, or None; never imports IPython (it is loaded only in a kernel)."""
    module = sys.modules.get("IPython")
    return module.get_ipython() if module else None


# --------------------------------------------------------------------- the post_run_cell hook
def in_kernel() -> bool:
    """True inside a Jupyter kernel (not plain Python, not a terminal IPython)."""
    return getattr(ipython(), "kernel", None) is not None


def _pre_run_cell(info: object) -> None:
    _quiet.clear()
    ip = ipython()
    if _on_cell_start is not None and ip is not None:
        _on_cell_start(str(getattr(info, "raw_cell", "") or ""), _running_count(ip))


def _post_run_cell(result: ExecutionResult) -> None:
    """IPython hook: a cell raised (or was interrupted) → hand the error to the drill; then tell
    the cell journal the cell ended (the drill may have closed and archived the run meanwhile)."""
    error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
    if error is not None and _on_cell_error is not None:
        _on_cell_error(error)
    if _on_cell_end is not None:
        flush_output()
        if _on_cell_end is not None:
            _on_cell_end(getattr(result, "execution_count", None), error is not None)


def flush_output() -> None:
    """Push what the cell printed through the kernel's session now (ipykernel sends streams from
    a background thread and waits for it here), so the cell journal has all of it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _register(event: str, fn: Callable[..., None]) -> None:
    ip = ipython()
    if ip is not None and fn not in ip.events.callbacks[event]:
        ip.events.register(event, fn)


def hook(on_cell_error: CellFailed, *, unattended: bool = False) -> None:
    """Call ``on_cell_error`` with the exception of every cell that fails from now on; take SIGINT
    as an interrupt of the cells' own code only (``keep_interrupts``)."""
    global _on_cell_error
    _on_cell_error = on_cell_error
    _register("pre_run_cell", _pre_run_cell)
    _register("post_run_cell", _post_run_cell)
    _install_quiet_displayhook()
    keep_interrupts(hold=unattended)


def watch_cells(on_start: CellStarted, on_output: OutputSent, on_end: CellEnded) -> None:
    """Hand every cell's start, the outputs the kernel sends (scrubbed) and its end to an
    interactive run's cell journal, until ``unhook``."""
    global _on_cell_start, _on_cell_end, _on_output
    _on_cell_start, _on_output, _on_cell_end = on_start, on_output, on_end


def current_cell() -> tuple[str, int | None]:
    """The source and execution count of the cell running now (IPython stores a cell's input in
    its history before running it): the cell that opened a run is journalled too."""
    ip = ipython()
    if ip is None:
        return "", None
    history = ip.user_ns.get("_ih") or [""]
    return str(history[-1]), _running_count(ip)


def _running_count(ip: InteractiveShell) -> int:
    """The execution count of the cell running now: IPython (9) counts a cell before it runs it."""
    return int(ip.execution_count) - 1


def unhook() -> None:
    """Stop watching cells (the run is closed)."""
    global _on_cell_start, _on_cell_end, _on_output
    _on_cell_start = _on_cell_end = _on_output = None
    ip = ipython()
    for event, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        if ip is not None and fn in ip.events.callbacks[event]:
            ip.events.unregister(event, fn)


# --------------------------------------------------------------------- errors on one line
def one_line(exc: BaseException, what: str) -> None:
    """Have IPython show ``exc`` as one line and a hint, as it shows a ``DrillbookError`` (IPython
    honours ``_render_traceback_``); the run's evidence keeps the full traceback."""
    if hasattr(exc, "_render_traceback_") or not in_kernel():
        return
    detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    lines = [f"\x1b[31merror: {what}: {detail}\x1b[0m",
             "hint: the full traceback is in this run's evidence, folded under this cell"]
    try:
        exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
    except AttributeError:  # an exception type without instance attributes: the usual traceback
        pass


# --------------------------------------------------------------------- no echoed values
def quiet(value: object) -> None:
    """Do not echo ``value`` if it ends up the running cell's result (a drill call returned it)."""
    if value is not None and in_kernel():
        _quiet.append(value)


def _install_quiet_displayhook() -> None:
    """Wrap the hook IPython installs as ``sys.displayhook`` while a cell runs."""
    trap = getattr(ipython(), "display_trap", None)
    original = getattr(trap, "hook", None)
    if original is None or getattr(original, "drillbook_quiet", False):
        return

    def displayhook(result: object) -> None:
        if any(result is value for value in _quiet):
            return
        original(result)

    displayhook.drillbook_quiet = True  # type: ignore[attr-defined]
    trap.hook = displayhook


# --------------------------------------------------------------------- interrupts
# ipykernel raises KeyboardInterrupt wherever a SIGINT lands while it handles a message. One that lands
# in ipykernel's or IPython's own code around a cell (sending the reply, running the hooks) is swallowed
# there with the cell's reply unsent: papermill then waits for a reply that never comes until the
# runner's grace ends and kills the kernel, the cleanups unrun. Between messages SIGINT is ignored, so
# an interrupt sent then is lost. A drill's kernel instead raises KeyboardInterrupt only in the cells'
# own code (a frame whose globals are the notebook's); one that lands elsewhere is held: a runner's
# stops the next cell before its first statement (the drill's cleanups then run), a person's is
# dropped, as an idle kernel drops it.
_hold = False  # an interrupt outside a cell is held for the next one (a runner's kernel), else dropped
_pending = False  # one was held: the next cell raises it


def keep_interrupts(*, hold: bool) -> None:
    """Install the drill's SIGINT handler in this kernel and keep it across ipykernel's messages;
    ``hold``: an interrupt that lands outside a cell stops the next cell (else it is dropped)."""
    global _hold
    _hold = hold
    ip = ipython()
    shell_kernel = getattr(ip, "kernel", None)
    if ip is None or shell_kernel is None or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _on_sigint)
    # ipykernel swaps in default_int_handler before each message and back after (pre/post_handler_hook)
    shell_kernel.pre_handler_hook = shell_kernel.post_handler_hook = _keep_handler
    if not any(isinstance(t, _RaisePending) for t in ip.ast_transformers):
        ip.ast_transformers.append(_RaisePending())


def _keep_handler() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pending
    if in_cell_code(frame):
        raise KeyboardInterrupt
    _pending = _pending or _hold


class _RaisePending(ast.NodeTransformer):
    """IPython hands every cell's syntax tree to its ``ast_transformers`` before running it: with an
    interrupt pending, the cell's first statement raises it."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        global _pending
        if _pending:
            _pending = False
            node.body.insert(0, ast.Raise(exc=ast.Call(func=ast.Name("KeyboardInterrupt", ast.Load()), args=[
                ast.Constant("interrupted between cells")], keywords=[])))
            ast.fix_missing_locations(node)
        return node


def in_cell_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller runs a cell's code (or a function a cell defined)."""
    user_globals = getattr(ipython(), "user_global_ns", None)
    while frame is not None:
        if user_globals is not None and frame.f_globals is user_globals:
            return True
        frame = frame.f_back
    return False


def interrupt_cell() -> None:
    """Interrupt the code the main thread runs, from another thread, as a person pressing Stop
    would (a real SIGINT, so a blocking call wakes up): see ``keep_interrupts`` for one that lands
    between cells. Only while Python handles SIGINT: a process that would die of it is left alone."""
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
        content = _scrub_output(content)
        _heard(msg_or_type, content)
        try:
            return original(stream, msg_or_type, content, *args, **kwargs)
        except Exception as exc:  # zmq.ZMQError (zmq is the kernel's, not imported here)
            if getattr(exc, "errno", None) != errno.ENOTSOCK:
                raise
            # ipykernel (7.4) publishes "idle" after the shutdown request while its iopub socket closes:
            # tornado then logs this traceback into the run's kernel log. Nobody can read that message;
            # ipykernel's own fix (ipython/ipykernel#1518) drops it the same way.
            return None

    send.drillbook_scrubs = True  # type: ignore[attr-defined]
    session.send = send


def _heard(msg_or_type: dict[str, object] | str | None, content: object) -> None:
    """Hand a scrubbed output message to the cell journal, if an interactive run keeps one."""
    listener = _on_output
    if listener is None:
        return
    if isinstance(msg_or_type, dict):
        header = msg_or_type.get("header")
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        content = msg_or_type.get("content")
    else:
        msg_type = msg_or_type
    if isinstance(msg_type, str) and isinstance(content, dict):
        listener(msg_type, content)
