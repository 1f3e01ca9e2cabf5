"""The drill API: what a runbook or drill notebook imports.

    drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)
    drill.step("Check roles", check_roles)                                  # read-only: always runs
    drill.step("Promote the standby", promote, mutating=True, gate="promote")  # dry-run: printed only
    drill.cleanup(failback, "Fail back")                                     # always runs at the end
    drill.check("writes accepted", ok)
    drill.measure("rto_seconds", rto, objective="rto_seconds")
    drill.finish()

Cleanups run when ``finish()`` is called, and also after any cell fails or is interrupted (an IPython
``post_run_cell`` hook), at kernel exit, or on leaving ``with drill:``. Everything is journalled to
``$DRILLBOOK_RUN_DIR`` for the runner to archive. In a kernel no runner started (a person in JupyterLab),
``start()`` opens the run itself and archives it at its end (``runner/interactive.py``); ``start()``
again while it is open keeps it. A resumed run skips the steps ``resuming`` says completed.

``Drill`` composes small helpers that never import it back: ``steps`` (one step, journalled),
``kernel`` (the IPython hook, the scrubbed kernel output), ``gates`` (approvals, the production
change guard), ``cleanups``, ``attachments``, ``runsecrets`` and ``resuming``.
"""
from __future__ import annotations

import atexit
import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from . import attachments, gates, journal, kernel, opening, paths, resuming, runsecrets, scraps, steps
from .cleanups import Cleanups
from .config import environments
from .config.environments import Environment
from .config.secrets import Redactor
from .errors import ChangeRequired, CheckFailed, DrillbookError, StopConditionCrossed, UnreachableHost
from .evidence.record import RUNNING, ChildRun, Cleanup, Journal, Measure, Results, Status, measured, verdict
from .journal import RUN_DIR_VAR, operator_identity
from .shells.base import Shell
from .shells.open import open_shell
from .summary import line, summary, tag

if TYPE_CHECKING:  # annotations only: the runner's pieces load once a person opens a run or a drill a notebook
    from .runner.child import ChildContext
    from .runner.held import HeldChild
    from .runner.interactive import InteractiveRun

T = TypeVar("T")
_current: Drill | None = None


class Drill:
    """One run of a notebook against one environment."""

    def __init__(self, env: Environment, *, dry_run: bool, approve: list[str], run_id: str | None,
                 change: str | None, run_dir: Path | None, project: Path, severity: str | None = None,
                 incident: str | None = None) -> None:
        self.env, self.dry_run, self.change = env, bool(dry_run), change or None
        self.project, self.run_dir = project, run_dir
        self.approved: set[str] = set(approve or [])
        self.unattended = run_dir is not None  # started by `drillbook run`: never wait for a person
        self.run_id = run_id or f"interactive-{time.strftime('%Y%m%dT%H%M%S')}"
        self.interactive: InteractiveRun | None = None  # set by start() when this kernel owns the run
        self.redactor = Redactor()
        runsecrets.learn(self.redactor, env, project)
        self._cleanups, self._closed, self._t0 = Cleanups(), False, time.monotonic()
        self.stopped: str | None = None  # why a stop condition stopped the run (see stop())
        self.carried = resuming.Carried()  # a resumed run: the steps the earlier run completed
        operator, source = operator_identity()
        self.data: Journal = {
            "run_id": self.run_id, "env": env.name, "dry_run": self.dry_run, "change": self.change,
            "operator": operator, "operator_source": source, "started_at": journal.now_iso(), "finished_at": None,
            "status": RUNNING, "reason": None, "steps": [], "checks": [], "measures": [],
            "cleanups": [], "attachments": [], "gates": [], "secret_refs": [],  # journal.SECRET_REFS
            "mode": "run" if self.unattended else "interactive", "severity": severity, "incident": incident,
        }
        self._save()

    # ----------------------------------------------------------------- journal
    def _save(self) -> None:
        if self.run_dir is not None:
            journal.write_json_atomic(self.run_dir / journal.JOURNAL_NAME, self.redactor.scrub_obj(self.data))

    def _say(self, text: str) -> None:
        colour = self.interactive is not None
        print(self.redactor.scrub(line(text, self.run_id, tag(self.env.name, self.dry_run, self.env.production,
                                                               colour), colour)), flush=True)

    def _adopt(self, run: InteractiveRun) -> None:
        """Become the interactive run ``run`` (its id, folder and cell journal)."""
        self.interactive, self.run_dir, self.run_id = run, run.run_dir, run.run_id
        self.data["run_id"] = run.run_id  # the journal is first written now, in the run's folder
        self._save()
        run.cells.begin(*kernel.current_cell())  # the cell calling start() is part of the run
        kernel.watch_cells(run.cells.begin, run.cells.output, run.cells.end)

    # ----------------------------------------------------------------- secrets
    def secret(self, name_or_ref: str) -> str:
        """Resolve a secret by its name in the environment (or a raw ``env:``/``file:`` reference).

        The value is registered with the redactor, so it is scrubbed from this run's journal
        (and the runner scrubs it from everything else it archives).
        """
        label, ref = runsecrets.lookup(self.env, name_or_ref)
        value = ref.resolve(self.project)
        self.redactor.add(label, value)
        self._journal_secret_ref(str(ref))
        return value

    def _journal_secret_ref(self, ref: str) -> None:
        """Journal the reference (never the value) of a secret this run resolved: the runner never
        saw a reference a cell wrote, so it resolves the journalled ones again before it scrubs."""
        known = self.data["secret_refs"]
        if ref not in known:
            known.append(ref)
            self._save()

    def shell(self, host: str) -> Shell:
        """A shell on one of the environment's hosts (local subprocess or SSH), redacting secrets."""
        return open_shell(self.env, host, self.secret, self.redactor, self.project)

    def optional_shell(self, host: str, purpose: str) -> Shell | None:
        """A shell on ``host``, or None when the host is marked ``optional`` and cannot be reached:
        then ``purpose`` is recorded as not applicable, with the reason (never as passed)."""
        try:
            return self.shell(host)
        except UnreachableHost as exc:
            if not self.env.hosts[host].optional:
                raise
            self.not_applicable(purpose, exc.message)
            return None

    # ----------------------------------------------------------------- steps
    def step(self, title: str, fn: Callable[[], T] | None = None, *, mutating: bool = False,
             gate: str | None = None, plan: str | None = None, confirm: str | None = None, resume: str = "run") -> Any:
        """Run ``fn`` as a recorded step. Use directly, or as a decorator (the function runs at once).

        A mutating step under ``dry_run`` prints ``plan`` (or the function's docstring) and does
        nothing. A ``gate`` must be approved first (``confirm``: the word to type in full, e.g. ``ROLLBACK``).
        ``resume="skip"``: in a run that resumes one where the step completed, it hands on its value instead."""
        if fn is None:
            return lambda f: self.step(title, f, mutating=mutating, gate=gate, plan=plan, confirm=confirm, resume=resume)
        self._ensure_open()
        if self.stopped is not None:  # a stop condition was crossed: the remaining steps are skipped
            raise StopConditionCrossed(self.stopped)
        if (kept := resuming.carried(self, title, mutating, gate, resume)) is not resuming.RUN:
            return kept
        return steps.run_step(self, title, fn, mutating, gate, plan, confirm)

    def not_applicable(self, title: str, reason: str) -> None:
        """Record a step that cannot apply here (e.g. no SSH host), with the reason. Never a pass."""
        self._ensure_open()
        steps.not_applicable(self, title, reason)

    @property
    def attended(self) -> bool:
        """A person watches this run in a notebook: a failing step shows one line, not a traceback."""
        return self.interactive is not None

    def _require_change(self, title: str) -> None:
        refusal = gates.change_missing(self, f"step {title!r}")
        if refusal:
            raise ChangeRequired(refusal)

    def stop(self, reason: str) -> None:
        """Stop the run from any thread (a stop condition, its faults healed): interrupt the cell, skip the rest."""
        if self.stopped is None and not self._closed:
            self.stopped = reason
            kernel.interrupt_cell()  # nothing happens while the kernel is idle: the next step refuses

    def approve_gate(self, gate: str, how: str | None = None, method: str = "panel", word: str | None = None) -> None:
        """Approve a gate ahead of its step (the panel does, with the ``word`` typed), journalling who, how and when."""
        gates.approve(self, gate, how, method, word)
        self._save()

    # ----------------------------------------------------------------- checks and measures
    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a check. A failed check makes the run 'failed' at ``finish()``; the run goes on."""
        self._ensure_open()
        self.data["checks"].append({"name": name, "passed": bool(ok), "detail": str(detail), "at": journal.now_iso()})
        self._save()
        self._say(f"{'✓' if ok else '✗'} check {name}" + (f": {detail}" if detail else ""))
        return bool(ok)

    def require(self, name: str, ok: bool, detail: str = "") -> None:
        """A check that stops the run at once when it fails (e.g. no steady state: do not inject a fault)."""
        if not self.check(name, ok, detail):
            raise CheckFailed(f"required check failed: {name}" + (f" ({detail})" if detail else ""))

    def measure(self, name: str, value: float, *, unit: str = "s", objective: str | None = None,
                better: str = "lower", detail: str = "") -> Measure:
        """Record a measured figure and, when ``objective`` names one of the environment's objectives,
        compare it: ``better='lower'`` passes when value ≤ objective, ``'higher'`` when value ≥ objective."""
        self._ensure_open()
        entry = measured(name, value, unit, objective, better, detail, self.env)
        self.data["measures"].append(entry)
        self._save()
        against = f" (objective {entry['objective_value']} → {entry['verdict']})" if entry["objective_value"] is not None else ""
        self._say(f"◆ {name} = {value:.6g} {unit}{against}")
        return entry

    # ----------------------------------------------------------------- cleanups and attachments
    def cleanup(self, fn: Callable[[], Any], title: str | None = None, *, mutating: bool = True) -> None:
        """Register ``fn`` to run at the end, whatever happens (last registered runs first)."""
        self._ensure_open()
        self._cleanups.add(title or getattr(fn, "__name__", "cleanup"), fn, mutating)

    def attachments_dir(self) -> Path | None:
        return attachments.directory(self.run_dir)

    def attach(self, name: str, content: str | bytes) -> Path | None:
        """Store a file (log, plot, output) in the run's evidence bundle under attachments/."""
        directory = self.attachments_dir()
        if directory is None:
            return None
        target = attachments.write(directory, name, content, self.redactor)
        self.data["attachments"].append(target.name)
        self._save()
        return target

    def run_notebook(self, name: str, parameters: dict[str, Any] | None = None) -> ChildRun:
        """Execute another catalogued notebook (a runbook) with papermill as part of this run.

        The executed copy goes to attachments/; its journal is returned (status, steps, measures).
        """
        from .runner.child import run_child  # papermill's machinery: only a drill that runs one

        return self.adopt_child(run_child(self._child_context(), name, parameters or {}))

    def hold_notebook(self, name: str, parameters: dict[str, Any] | None = None) -> HeldChild:
        """Start ``name`` as ``run_notebook`` would, held at its first step until ``.result()`` (before
        a fault: the recovery measured then excludes its kernel's start; ``runner.held``)."""
        from .runner.held import HeldChild  # as run_notebook

        held = HeldChild(self._child_context(), name, parameters or {}, on_result=self.adopt_child).start()
        self.cleanup(held.cancel, f"stop runbook {name} if it is still running", mutating=False)
        return held

    def _child_context(self) -> ChildContext:
        from .runner.child import ChildContext  # as run_notebook

        self._ensure_open()
        return ChildContext(self.project, self.env, self.dry_run, sorted(self.approved), self.change, self.run_id,
                            self.redactor, self.attachments_dir())

    def adopt_child(self, child: ChildRun) -> ChildRun:
        """Record a child run's executed copy among this run's attachments."""
        self.data["attachments"].append(child["notebook"])
        self._save()
        return child

    # ----------------------------------------------------------------- the end
    def _run_cleanups(self) -> None:
        self._cleanups.run(dry_run=self.dry_run, refusal=lambda what: gates.change_missing(self, what),
                           say=self._say, record=self._record_cleanup)

    def _record_cleanup(self, entry: Cleanup) -> None:
        self.data["cleanups"].append(entry)
        self._save()

    def _verdict(self) -> tuple[Status, str | None]:
        return verdict(self.data["checks"], self.data["measures"], self.data["cleanups"])

    def _close(self, status: str, reason: str | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self.stopped is not None:  # whatever interrupted the cell, the stop condition is why
            self.data["checks"].append({"name": "no stop condition crossed", "passed": False,
                                        "detail": self.stopped, "at": journal.now_iso()})
            status, reason = "failed", self.stopped
        try:
            self._run_cleanups()
        finally:
            if status == "passed" or (status == "failed" and reason is None):
                status, reason = self._verdict()
            self.data.update(status=status, reason=reason, finished_at=journal.now_iso(),
                             seconds=round(time.monotonic() - self._t0, 3))
            self._save()
            attachments.scrub_in_place(self.run_dir, self.redactor)
            if self.interactive is None:  # an interactive run stops watching once it is archived
                kernel.unhook()

    def _archive(self, results: Results | None) -> None:
        """An interactive run, closed: print the summary, archive the bundle, stop watching cells."""
        if self.interactive is not None and not self.interactive.archived:
            opening.archive(self.interactive, self.data, results, self.summary(self.interactive.bundle), self._say)

    def finish(self) -> Results:
        """Run the cleanups, record and glue the results, print the summary (and, for an interactive
        run, archive its evidence); raise if the run did not pass."""
        if self._closed:
            return self.results()
        self._close("passed", None)
        results = self.results()
        scraps.glue_results(results)
        if self.interactive is not None:
            self._archive(results)
        else:
            print(self.summary(), flush=True)
        if self.data["status"] == "failed":
            raise CheckFailed(f"drill {self.data['status']}: {self.data['reason']}")
        if self.data["status"] != "passed":
            raise DrillbookError(f"run ended {self.data['status']}: {self.data['reason']}")
        kernel.quiet(results)  # the summary above says it all: no dict echoed under the cell
        return results

    def fail(self, exc: BaseException) -> None:
        """Close the run after an exception (called by the cell hook, ``with``, or the runner)."""
        if self._closed:
            return
        failed = isinstance(exc, CheckFailed) or self.stopped is not None  # a stop condition ends it failed
        status = "failed" if failed else "aborted" if isinstance(exc, KeyboardInterrupt) else "error"
        reason = f"{type(exc).__name__}: {exc}".strip()
        self.data["error"] = {"type": type(exc).__name__, "message": str(exc),
                              "traceback": "".join(traceback.format_exception(exc))[-4000:]}
        self._say(f"✗ run stopped ({status}): {reason}; running cleanups")
        self._close(status, reason)
        self._archive(self.results())

    def results(self) -> Results:
        d = self.data
        return cast(Results, self.redactor.scrub_obj(Results(
            run_id=d["run_id"], env=d["env"], dry_run=d["dry_run"], status=d["status"], reason=d["reason"],
            steps=d["steps"], checks=d["checks"], measures=d["measures"], cleanups=d["cleanups"])))

    def summary(self, evidence: Path | None = None) -> str:
        """The outcome, every step, check, measure and cleanup, what changed, and the evidence."""
        return self.redactor.scrub(summary(self.data, evidence))

    def _ensure_open(self) -> None:
        if self._closed:
            raise DrillbookError(f"run {self.run_id} is already closed ({self.data['status']})",
                                 "re-run the cell that calls drillbook.start() to begin a new run")

    def __enter__(self) -> Drill:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        elif not self._closed:
            self.finish()


# --------------------------------------------------------------------- lifecycle hooks
def _cell_failed(error: BaseException) -> None:
    """A cell raised (or was interrupted; the kernel's hook says) → close the run and run the cleanups now,
    unless start() refused to change the open run or a step stopped at its gate: then the run goes on."""
    drill = _current
    if drill is not None and not drill._closed and not isinstance(error, (*opening.REFUSALS, gates.AwaitingApproval)):
        drill.fail(error)


def _at_exit() -> None:
    """Graceful kernel exit with the run still open. Under the runner every cell ran (a failing
    cell would have closed it) but ``finish()`` was never called: run the cleanups and judge what
    was recorded. A person's run was left unfinished (a shutdown or restart): it is aborted."""
    drill = _current
    if drill is not None and not drill._closed:
        person = drill.interactive is not None
        drill.data["note"] = "finish() was not called; " + ("the kernel was shut down or restarted" if person
                                                            else "the run was closed at kernel exit")
        drill._close(*(("aborted", "the kernel was shut down or restarted before finish()") if person else ("passed", None)))
        drill._archive(drill.results())


atexit.register(_at_exit)


def start(env: str | None = None, dry_run: bool = True, approve: list[str] | tuple[str, ...] | None = None,
          run_id: str | None = None, change: str | None = None, severity: str | None = None,
          incident: str | None = None, resume: str | None = None, allow_changed: bool = False) -> Drill:
    """Begin a run against ``env`` (default: ``incident.json``'s, else ``local``), dry run, nothing approved; in a
    kernel no runner started it is opened and archived here, kept while open; ``resume=RUN_ID`` continues that run."""
    global _current
    approve = [approve] if isinstance(approve, str) else approve
    want = opening.wanted(env, severity, incident, Path.cwd(), resume, allow_changed)
    if _current is not None and not _current._closed:
        if _current.interactive is not None:
            opening.keep(_current, want, dry_run, list(approve or []), change)
            return _current
        _current._close("aborted", "superseded by a new drillbook.start() in the same kernel")
    project = paths.project_root()
    environment = environments.load_environment(want.env, project)
    run_dir = Path(os.environ[RUN_DIR_VAR]) if os.environ.get(RUN_DIR_VAR) else None
    gates.require_change_up_front(environment, dry_run, change, unattended=run_dir is not None)
    drill = Drill(environment, dry_run=dry_run, approve=list(approve or []), run_id=run_id,
                  change=change, run_dir=run_dir, project=project, severity=want.severity, incident=want.incident)
    kernel.scrub_kernel_output(drill.redactor)
    if run_dir is None and kernel.in_kernel():  # a person's run: it is a run like any other
        drill._adopt(opening.open_interactive(environment, project, want, drill.dry_run, sorted(drill.approved),
                                              drill.change, run_id, drill.redactor))
    previous, _current = (_current.run_id if _current is not None else None), drill
    kernel.hook(_cell_failed, unattended=run_dir is not None)
    opening.announce(drill, previous)
    return drill


def current() -> Drill | None:
    return _current
