"""The drill API: what a runbook or drill notebook imports.

    drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)
    drill.step("Check roles", check_roles)                                  # read-only: always runs
    drill.step("Promote the standby", promote, mutating=True, gate="promote")  # dry-run: printed only
    drill.cleanup(failback, "Fail back")                                     # always runs at the end
    drill.check("writes accepted", ok)
    drill.measure("rto_seconds", rto, objective="rto_seconds")
    drill.finish()

Cleanups run when ``finish()`` is called, and also after any cell fails or is interrupted
(an IPython ``post_run_cell`` hook), at kernel exit, or on leaving ``with drill:``.
Everything is journalled to ``$DRILLBOOK_RUN_DIR`` for the runner to archive.

``Drill`` composes small helpers that never import it back: ``kernel`` (the IPython hook, the
scrubbed kernel output), ``gates`` (approvals, the production change guard), ``cleanups``,
``attachments`` and ``runsecrets``.
"""
from __future__ import annotations

import atexit
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar, cast

from . import attachments, gates, journal, kernel, paths, runsecrets, scraps
from .cleanups import Cleanups
from .config import environments
from .config.environments import Environment
from .config.secrets import Redactor
from .errors import ChangeRequired, CheckFailed, DrillbookError, StopConditionCrossed, UnreachableHost
from .evidence.record import RUNNING, ChildRun, Cleanup, Journal, Measure, Results, Status, Step, verdict
from .journal import RUN_DIR_VAR, operator_name
from .shells.base import Shell
from .shells.open import open_shell

T = TypeVar("T")
_current: Drill | None = None




class Drill:
    """One run of a notebook against one environment."""

    def __init__(self, env: Environment, *, dry_run: bool, approve: list[str], run_id: str | None,
                 change: str | None, run_dir: Path | None, project: Path) -> None:
        self.env = env
        self.dry_run = bool(dry_run)
        self.approved: set[str] = set(approve or [])
        self.change = change or None
        self.project = project
        self.run_dir = run_dir
        self.unattended = run_dir is not None  # started by `drillbook run`: never wait for a person
        self.run_id = run_id or f"interactive-{time.strftime('%Y%m%dT%H%M%S')}"
        self.redactor = Redactor()
        runsecrets.learn(self.redactor, env, project)
        self._cleanups = Cleanups()
        self._closed = False
        self.stopped: str | None = None  # why a stop condition stopped the run (see stop())
        self._t0 = time.monotonic()
        self.data: Journal = {
            "run_id": self.run_id, "env": env.name, "dry_run": self.dry_run, "change": self.change,
            "operator": operator_name(), "started_at": journal.now_iso(), "finished_at": None,
            "status": RUNNING, "reason": None, "steps": [], "checks": [], "measures": [],
            "cleanups": [], "attachments": [], "gates": [], "secret_refs": [],  # journal.SECRET_REFS
        }
        self._save()

    # ----------------------------------------------------------------- journal
    def _save(self) -> None:
        if self.run_dir is not None:
            journal.write_json_atomic(self.run_dir / journal.JOURNAL_NAME, self.redactor.scrub_obj(self.data))

    def _say(self, text: str) -> None:
        print(self.redactor.scrub(text), flush=True)

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
             gate: str | None = None, plan: str | None = None) -> Any:
        """Run ``fn`` as a recorded step. Use directly, or as a decorator (the function runs at once).

        A mutating step under ``dry_run`` prints ``plan`` (or the function's docstring) and does
        nothing. A step with a ``gate`` runs only once the gate is approved.
        """
        if fn is None:
            return lambda f: self.step(title, f, mutating=mutating, gate=gate, plan=plan)
        self._ensure_open()
        if self.stopped is not None:  # a stop condition was crossed: the remaining steps are skipped
            raise StopConditionCrossed(self.stopped)
        record: Step = {"title": title, "mutating": mutating, "gate": gate, "started_at": journal.now_iso(),
                        "status": RUNNING}
        self.data["steps"].append(record)
        t0 = time.monotonic()
        what = plan or (fn.__doc__ or "").strip() or title
        if mutating and self.dry_run:
            record.update(status="dry-run", detail=f"would: {what}", ended_at=journal.now_iso(), seconds=0.0)
            self._save()
            self._say(f"○ {title} — DRY RUN, would: {what}" + (f" (after gate {gate!r})" if gate else ""))
            return None
        try:
            if mutating:
                self._require_change(title)
            if gate:
                gates.pass_gate(self, gate, title)
            self._say(f"▶ {title}")
            self._save()
            result = fn()
        except BaseException as exc:
            record.update(status="failed", detail=f"{type(exc).__name__}: {exc}",
                          ended_at=journal.now_iso(), seconds=round(time.monotonic() - t0, 3))
            self._save()
            raise
        record.update(status="passed", ended_at=journal.now_iso(), seconds=round(time.monotonic() - t0, 3))
        if isinstance(result, (str, int, float, bool)) and result is not None:
            record["detail"] = str(result)
        self._save()
        self._say(f"✓ {title} ({record['seconds']:.2f} s)")
        return result

    def not_applicable(self, title: str, reason: str) -> None:
        """Record a step that cannot apply here (e.g. no SSH host), with the reason. Never a pass."""
        self._ensure_open()
        now = journal.now_iso()
        self.data["steps"].append({"title": title, "mutating": False, "gate": None, "started_at": now,
                                   "ended_at": now, "seconds": 0.0, "status": "not-applicable", "detail": reason})
        self._save()
        self._say(f"– {title} — not applicable: {reason}")

    def _require_change(self, title: str) -> None:
        refusal = gates.change_missing(self, f"step {title!r}")
        if refusal:
            raise ChangeRequired(refusal)

    def stop(self, reason: str) -> None:
        """Stop the run now, from any thread (a stop condition was crossed; the faults are healed):
        the cell in progress is interrupted, the remaining steps are skipped, the run ends failed."""
        if self.stopped is None and not self._closed:
            self.stopped = reason
            kernel.interrupt_cell()  # nothing happens while the kernel is idle: the next step refuses

    def approve_gate(self, gate: str, how: str | None = None) -> None:
        """Approve a gate ahead of its step (the confirmation panel does), journalling who and how."""
        gates.approve(self, gate, how)
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
        entry: Measure = {"name": name, "value": value, "unit": unit, "objective": objective,
                          "objective_value": None, "better": better, "verdict": "recorded",
                          "detail": detail, "at": journal.now_iso()}
        if objective is not None:
            target = self.env.objectives.get(objective)
            if target is None:
                entry["verdict"] = "no objective"
                entry["detail"] = (detail + "; " if detail else "") + f"environment {self.env.name} sets no {objective}"
            else:
                ok = value <= target if better == "lower" else value >= target
                entry.update(objective_value=target, verdict="met" if ok else "missed")
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
        from .runner.child import ChildContext, run_child  # papermill's machinery: only a drill that runs one

        self._ensure_open()
        context = ChildContext(self.project, self.env, self.dry_run, sorted(self.approved), self.change,
                               self.run_id, self.redactor, self.attachments_dir())
        child = run_child(context, name, parameters or {})
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
            kernel.unhook()

    def finish(self) -> Results:
        """Run the cleanups, record and glue the results, print the summary; raise if the run did not pass."""
        if self._closed:
            return self.results()
        self._close("passed", None)
        results = self.results()
        scraps.glue_results(results)
        self._say(self.summary())
        if self.data["status"] == "failed":
            raise CheckFailed(f"drill {self.data['status']}: {self.data['reason']}")
        if self.data["status"] != "passed":
            raise DrillbookError(f"run ended {self.data['status']}: {self.data['reason']}")
        return results

    def fail(self, exc: BaseException) -> None:
        """Close the run after an exception (called by the cell hook, ``with``, or the runner)."""
        if self._closed:
            return
        if isinstance(exc, CheckFailed) or self.stopped is not None:
            status = "failed"
        elif isinstance(exc, KeyboardInterrupt):
            status = "aborted"
        else:
            status = "error"
        reason = f"{type(exc).__name__}: {exc}".strip()
        self.data["error"] = {"type": type(exc).__name__, "message": str(exc),
                              "traceback": "".join(traceback.format_exception(exc))[-4000:]}
        self._say(f"✗ run stopped ({status}): {reason}; running cleanups")
        self._close(status, reason)

    def results(self) -> Results:
        d = self.data
        return cast(Results, self.redactor.scrub_obj(Results(
            run_id=d["run_id"], env=d["env"], dry_run=d["dry_run"], status=d["status"], reason=d["reason"],
            steps=d["steps"], checks=d["checks"], measures=d["measures"], cleanups=d["cleanups"])))

    def summary(self) -> str:
        d = self.data
        lines = [f"Run {d['run_id']} on {d['env']}: {d['status'].upper()}" + (f" — {d['reason']}" if d["reason"] else "")]
        for s in d["steps"]:
            lines.append(f"  step    {s['status']:<14} {s['title']}")
        for c in d["checks"]:
            lines.append(f"  check   {'passed' if c['passed'] else 'FAILED':<14} {c['name']}")
        for m in d["measures"]:
            target = f" vs {m['objective_value']}" if m["objective_value"] is not None else ""
            lines.append(f"  measure {m['verdict']:<14} {m['name']} = {m['value']:.6g} {m['unit']}{target}")
        for c in d["cleanups"]:
            lines.append(f"  cleanup {c['status']:<14} {c['title']}")
        return self.redactor.scrub("\n".join(lines))

    def _ensure_open(self) -> None:
        if self._closed:
            raise DrillbookError(
                f"run {self.run_id} is already closed ({self.data['status']})",
                "re-run the cell that calls drillbook.start() to begin a new run",
            )

    def __enter__(self) -> Drill:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        elif not self._closed:
            self.finish()


# --------------------------------------------------------------------- lifecycle hooks
def _cell_failed(error: BaseException) -> None:
    """A cell raised (or was interrupted; the kernel's hook says) → close the run and run the cleanups now."""
    drill = _current
    if drill is not None and not drill._closed:
        drill.fail(error)


def _at_exit() -> None:
    """Graceful kernel exit with the run still open: every cell ran (a failing cell would have
    closed it) but ``finish()`` was never called. Run the cleanups and judge what was recorded."""
    drill = _current
    if drill is not None and not drill._closed:
        drill.data["note"] = "finish() was not called; the run was closed at kernel exit"
        drill._close("passed", None)


atexit.register(_at_exit)


def start(env: str = "local", dry_run: bool = True, approve: list[str] | tuple[str, ...] | None = None,
          run_id: str | None = None, change: str | None = None) -> Drill:
    """Begin a run against environment ``env``. Safe defaults: ``dry_run=True``, nothing approved."""
    global _current
    if _current is not None and not _current._closed:
        _current._close("aborted", "superseded by a new drillbook.start() in the same kernel")
    project = paths.project_root()
    environment = environments.load_environment(env, project)
    run_dir = Path(os.environ[RUN_DIR_VAR]) if os.environ.get(RUN_DIR_VAR) else None
    if isinstance(approve, str):
        approve = [approve]
    drill = Drill(environment, dry_run=dry_run, approve=list(approve or []), run_id=run_id,
                  change=change, run_dir=run_dir, project=project)
    _current = drill
    kernel.hook(_cell_failed)
    kernel.scrub_kernel_output(drill.redactor)
    mode = "DRY RUN (nothing will be changed)" if drill.dry_run else "LIVE"
    prod = " — PRODUCTION" if environment.production else ""
    drill._say(f"drillbook run {drill.run_id} on {environment.name}{prod}: {mode}")
    return drill


def current() -> Drill | None:
    return _current
