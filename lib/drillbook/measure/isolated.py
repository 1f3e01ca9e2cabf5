"""The load of ``measure.load`` run in a process of its own, for drill kernels that also run papermill.

    from drillbook.measure.isolated import IsolatedLoad
    load = IsolatedLoad(writer=pg.connections.portable_connector(),
                        probe=pg.connections.portable_connector(), run=drill.run_id).start()

Same API as ``Load``; the threads run in a new interpreter that talks pickles over a socket
pair, so the kernel's GIL (busy for tens of milliseconds while papermill runs a runbook) does
not show up in the measures.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import TypedDict

from ..errors import LoadProcessError
from .compute import Ack, ProbeResult
from .load import Connector, Load, clock


class Recorded(TypedDict):
    """What the load's process has recorded so far."""

    acks: list[Ack]
    errors: list[tuple[float, str]]
    latencies: list[float]
    probes: list[ProbeResult]


_CHILD = "import sys; from drillbook.measure.isolated import _serve_fd; _serve_fd(int(sys.argv[1]))"


def _empty() -> Recorded:
    return {"acks": [], "errors": [], "latencies": [], "probes": []}


class IsolatedLoad(Load):
    """The same writer and probe, run in a process of their own (a new Python interpreter).

    A drill kernel that executes a runbook with papermill keeps the GIL busy for tens of
    milliseconds at a time, and threads waiting for it would measure that, not the database:
    in their own process the writer's retries and the probe's schedule keep their resolution.
    The probe runs at a fixed rate (``probe_in_flight`` attempts at most at once). Connectors
    must be picklable (``pg.connections.portable_connector()``). Marks stay in this process: the
    monotonic clock is the system's, shared by both. Everything else reads as for ``Load``.
    """

    def __init__(self, writer: Connector | None, probe: Connector | None, run: str,
                 probe_interval: float = 0.05, write_interval: float = 0.01, probe_in_flight: int = 4) -> None:
        self.run = run
        self.marks: dict[str, float] = {}
        self._spec = (writer, probe, run, probe_interval, write_interval, probe_in_flight)
        self.writer = _Remote(self) if writer else None  # type: ignore[assignment]
        self.probe = _Remote(self) if probe else None  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._pipe: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._state: Recorded = _empty()
        self._read_at = 0.0
        self._final = False

    def start(self) -> IsolatedLoad:
        # A fresh interpreter (not fork: a kernel runs threads; not multiprocessing's spawn: it
        # re-imports the caller's __main__), talking pickles over a socket pair.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(theirs.fileno())], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self._pipe = Connection(ours.detach())
        with self._lock:
            self._ask(self._spec)  # the threads run once the first state arrives
        self.marks["start"] = clock()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._pipe is not None and not self._pipe.closed:
                try:
                    if not self._final:
                        self._final = True
                        self._ask("stop")
                finally:  # also after the process died: close our end, reap it
                    self._pipe.close()
                    if self._process is not None:
                        self._process.wait(timeout=10)
        self.marks.setdefault("stop", clock())

    def state(self) -> Recorded:
        """What the load's process recorded so far (re-read at most every 5 ms; final after stop)."""
        with self._lock:
            if not self._final and self._pipe is not None and clock() - self._read_at > 0.005:
                self._ask("state")
            return self._state

    def _ask(self, message: object) -> None:
        """Send a message to the load's process and take its answer: the state, or the error it raised."""
        if self._pipe is None:
            raise LoadProcessError("the load has no process yet", "start() the load first")
        try:
            self._pipe.send(message)
            answer = self._pipe.recv()
        except (EOFError, OSError):  # a dead process breaks the pipe on send, or closes it on recv
            self._final = True
            raise LoadProcessError("the load's process ended unexpectedly (see the kernel's stderr)") from None
        if isinstance(answer, BaseException):
            self._final = True
            raise answer
        self._state, self._read_at = answer, clock()


class _Remote:
    """This process's view of the writer or the probe of an ``IsolatedLoad``."""

    def __init__(self, load: IsolatedLoad) -> None:
        self._load = load

    acks = property(lambda self: self._load.state()["acks"])
    errors = property(lambda self: self._load.state()["errors"])
    latencies = property(lambda self: self._load.state()["latencies"])
    results = property(lambda self: self._load.state()["probes"])


def _serve_fd(fd: int) -> None:
    """Entry point of the isolated load's process: its parameters arrive on the socket ``fd``."""
    # This process is the load's alone: hand the GIL over often, so the probe's scheduler wakes
    # on time while other threads are busy setting up TLS connections.
    sys.setswitchinterval(0.0005)
    pipe = Connection(fd)
    _serve(pipe, *pipe.recv())


def _serve(pipe: Connection, writer: Connector | None, probe: Connector | None, run: str, probe_interval: float,
           write_interval: float, probe_in_flight: int) -> None:
    """The isolated load's process: run the threads, answer "state" and "stop" until stopped."""
    try:
        load = Load(writer, probe, run, probe_interval, write_interval, probe_in_flight).start()
    except BaseException as exc:  # e.g. an interval above 50 ms: raised in the drill's kernel instead
        pipe.send(exc)
        return
    try:
        pipe.send(_recorded(load))
        while True:
            command = pipe.recv()
            if command == "stop":
                load.stop()
            pipe.send(_recorded(load))
            if command == "stop":
                return
    except (EOFError, OSError):  # the drill's kernel is gone: stop writing at once
        load.stop()


def _recorded(load: Load) -> Recorded:
    return {"acks": load.acks, "errors": list(load.writer.errors) if load.writer else [],
            "latencies": list(load.writer.latencies) if load.writer else [], "probes": load.probes}


