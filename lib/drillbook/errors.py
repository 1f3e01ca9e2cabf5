"""One error base class for everything drillbook refuses or fails to do.

Every error carries a one-line message and a hint that says what to do about it.
The CLI prints both (never a traceback) and exits with the error's exit code:
2 for bad input or a refusal before anything ran, 1 for a run that did not pass, 3 for a run
refused because its environment is frozen.
"""
from __future__ import annotations


class DrillbookError(Exception):
    """Base class. ``message`` says what is wrong, ``hint`` what to do about it."""

    exit_code = 2
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        # Keep messages to one line: they are printed as-is to an operator at 3 AM.
        self.message = " ".join(str(message).split())
        self.hint = " ".join((hint if hint is not None else self.default_hint).split())
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error in a notebook: the message and the hint, no traceback
        (the run's evidence keeps the full one)."""
        return [f"\x1b[31merror: {self.message}\x1b[0m"] + ([f"hint: {self.hint}"] if self.hint else [])


class ConfigError(DrillbookError):
    """A file we read (YAML, notebook metadata, mkdocs.yml) is malformed or invalid."""


class NotFound(DrillbookError):
    """A named thing (drill, runbook, environment, run) does not exist."""


class SecretError(DrillbookError):
    """A secret reference is malformed or cannot be resolved."""


class NotebookError(DrillbookError):
    """A notebook cannot be run as asked: no parameters cell, bad parameter, …"""


class RunOpen(DrillbookError):
    """A run is open in this kernel and the request would change what it runs against."""

    default_hint = "call drill.finish() first, then start the new run"


class LockBusy(DrillbookError):
    """Another run holds the environment."""

    default_hint = "wait for the other run to finish, or pass --wait SECONDS"


class Frozen(DrillbookError):
    """The environment is frozen (``drillbook freeze``): nothing starts there until it is thawed."""

    exit_code = 3  # not bad input and not a failed run: a scheduler takes it as "skipped"


class GateNotApproved(DrillbookError):
    """A dangerous step was reached without the operator's approval."""


class ChangeRequired(DrillbookError):
    """A mutating step in a production environment needs a change reference."""

    default_hint = "pass change='CHG-1234' (drillbook run … --change CHG-1234), or run with dry_run=True"


class CheckFailed(DrillbookError):
    """A required check failed; the run's status is 'failed', not 'error'."""

    exit_code = 1


class ResumeRefused(DrillbookError):
    """A run cannot be resumed: unknown, passed, on another environment, already resumed, or changed."""

    default_hint = "see drillbook status for the runs that can be resumed"
class StopConditionCrossed(CheckFailed):
    """A drill's stop condition was crossed: the fault was healed and the run ended failed."""

    default_hint = "read the run's evidence: what the probes saw when the bound was crossed"


class EvidenceError(DrillbookError):
    """The evidence archive cannot be read or written as required."""


class LabError(DrillbookError):
    """The embedded lab cannot be started, stopped or inspected."""


class UnreachableHost(DrillbookError):
    """A host in an environment cannot be reached (connect, auth or host key)."""


class MeasureError(DrillbookError):
    """The load that measures a recovery cannot run, or did not see what it waited for."""

    exit_code = 1

    def __reduce__(self) -> tuple[type[MeasureError], tuple[str, str]]:
        # An isolated load raises these in its own process and sends them over a pipe: keep the hint.
        return type(self), (self.message, self.hint)


class ProbeIntervalError(MeasureError, ValueError):
    """A probe interval too coarse to measure with (a ValueError, as before it had its own class)."""

    exit_code = 2
    default_hint = "probe at least every 50 ms, e.g. probe_interval=0.03"


class LoadTimeout(MeasureError, TimeoutError):
    """The load did not see what it waited for in time (a TimeoutError, as before it had its own class)."""


class LoadProcessError(MeasureError):
    """The process running an isolated load ended before it was stopped."""

    default_hint = "read the kernel's stderr for the load process's traceback"
