"""An interactive run: a runbook run by a person in a Jupyter kernel, as much a run as ``drillbook run``.

``drillbook.start()`` in a kernel that no runner started opens one (``open_run``), in the kernel's
own process, with the runner's pieces:

* the environment's lock (``locks``), held by the kernel until the run is archived; the kernel's
  death releases it, so a second run on the environment (interactive or ``drillbook run``) is
  refused meanwhile, naming who holds it;
* a private run folder and a signed in-flight marker naming the kernel (``inflight``): the kernel's
  journal and the notebook rebuilt from its cells (``cells.CellLog``) are written there as they go;
* at the end (``finish()``, a failing or interrupted cell, kernel exit), ``archive`` builds the
  record (mode ``interactive``), marks the failing cell, scrubs everything, renders the HTML once
  and writes the bundle and ledger entry with ``evidence.archive.record_run``, as the runner does;
* its plan hash (``personplan``): what an approval pasted in a gate panel must match, and what a dry
  run of it lets an approver approve.

A kernel killed meanwhile leaves its marker: the next drillbook command archives the run as
``aborted`` from the journal and the cells (``inflight.recover_aborted``), exactly like a dead runner's.
"""
from __future__ import annotations

import html
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..cells import CellLog
from ..config import catalog
from ..config.environments import Environment
from ..config.secrets import Redactor
from ..errors import DrillbookError
from ..evidence import keys, record
from ..evidence.archive import record_run
from ..evidence.archive import run_dir as bundle_dir
from ..evidence.record import Journal, Record, Results
from . import inflight, locks, personplan, resume
from .outcome import html_header, mark_failure

SESSION_VAR = "JPY_SESSION_NAME"  # the notebook's path, as Jupyter's server tells its kernels


@dataclass
class Opening:
    """What a person's ``drillbook.start()`` asked for."""

    env: Environment
    project: Path
    dry_run: bool
    approve: list[str]
    change: str | None
    severity: str | None
    incident: str | None
    operator: str
    operator_source: str
    notebook: Path | None  # the notebook being run, when the kernel can tell
    runbook: str | None = None  # the catalog name it is a working copy of (incident.json)
    resume: str | None = None  # the run this one resumes
    allow_changed: bool = False  # resume although the notebook changed (recorded)


def notebook_path(project: Path, named: str | None = None) -> Path | None:
    """The notebook this kernel runs: what the Jupyter server told the kernel, else ``named`` (the
    runbook an incident's working copy names); None when neither names a file."""
    for candidate in (os.environ.get(SESSION_VAR), named):
        if not candidate:
            continue
        path = Path(candidate)
        for option in ([path] if path.is_absolute() else [Path.cwd() / path, project / path, Path.cwd() / path.name]):
            if option.suffix == ".ipynb" and option.is_file():
                return option.resolve()
        if not path.suffix:  # a catalog name
            try:
                return catalog.find(candidate, project)[0]
            except DrillbookError:
                continue
    return None


def _describe(opening: Opening) -> tuple[str, str, str, str, list[str], record.Source]:
    """name, kind, title, the notebook's path in the project, controls and source of the run."""
    path = opening.notebook
    if path is None:
        source: record.Source = {"path": "unknown", "sha256": "unknown", "git_commit": None, "git_dirty": None}
        return "interactive", "notebook", "Interactive run", "unknown", [], source
    try:
        entry = catalog.load_optional_entry(path)
    except DrillbookError:
        entry = None
    source = record.source_info(path, opening.project)  # the file as saved: a working copy is what ran
    name = opening.runbook or (entry.name if entry else path.stem)  # a working copy counts as its runbook
    if entry is None:
        return name, "notebook", path.stem, source["path"], [], source
    return name, entry.kind, entry.meta.title, source["path"], list(entry.meta.controls), source


class InteractiveRun:
    """The run folder, marker, lock and cell journal of one interactive run, until it is archived."""

    def __init__(self, opening: Opening, run_id: str, redactor: Redactor) -> None:
        from .plan import new_run_id  # plan imports nbformat: loaded only once a person starts a run

        self.project = opening.project
        self.archive_root = paths.archive_root(opening.project)
        state = paths.state_dir(opening.project)
        self.key = keys.load_or_create_signing_key()
        name, kind, title, notebook, controls, source = _describe(opening)
        changed = resume.check_interactive(opening.resume, opening.notebook, self.archive_root, opening.allow_changed)
        self.run_id = run_id or new_run_id(name, opening.env.name)
        self.base: Record = record.base_record(
            run_id=self.run_id, drill=name, kind=kind, title=title, notebook=notebook, env=opening.env,
            parameters={"env": opening.env.name, "dry_run": opening.dry_run, "approve": opening.approve,
                        "change": opening.change},
            dry_run=opening.dry_run, approve=list(opening.approve), change=opening.change, controls=controls,
            source=source, operator=opening.operator, operator_source=opening.operator_source,
            mode="interactive", severity=opening.severity, incident=opening.incident)
        resume.stamp(self.base, opening.resume, changed)
        # What an approval of this run binds, and what a dry run of it lets an approver approve
        self.plan_source = personplan.PlanSource(opening.notebook, Path.cwd(), name)
        plan = personplan.plan_hash(self.plan_source, opening.env)
        if plan is not None:
            self.base["plan"] = plan
        self._lock = ExitStack()
        self._lock.enter_context(locks.hold(state, opening.env.name, self.run_id, operator=opening.operator,
                                            hint="wait until that run is finished (drill.finish() in its notebook), then start again"))
        try:
            self.marker = inflight.Marker.open(state, self.run_id, redactor, dict(self.base), self.archive_root,
                                               self.key, {})
        except BaseException:
            self._lock.close()
            raise
        self.run_dir = self.marker.run_dir
        resume.hand_over(opening.resume, self.run_dir, self.archive_root)  # the steps the kernel may skip
        self.cells = CellLog(self.run_dir)
        self.redactor = redactor
        self.bundle = bundle_dir(self.archive_root, self.run_id)
        self.archived = False
        self._t0 = time.monotonic()

    def archive(self, kernel_journal: Journal, results: Results | None) -> Path:
        """Archive the closed run as a signed bundle; release the lock; return the bundle's folder."""
        if self.archived:
            return self.bundle
        self.archived = True
        try:
            self.cells.end(None, failed=kernel_journal["status"] != "passed")  # the cell that closed it
            done, notebook, page = self._evidence(kernel_journal, results)
            self.marker.note_outcome(dict(done))
            record_run(self.archive_root, self.key, done, self.redactor, notebook=notebook, html=page,
                       attachments=self.run_dir / "attachments", on_manifest=self.marker.note_manifest)
            self.marker.finish()
        finally:
            self._lock.close()
        return self.bundle

    def _evidence(self, kernel_journal: Journal, results: Results | None) -> tuple[Record, dict[str, Any], str | None]:
        """The record, the scrubbed notebook of the cells run and its HTML page (None if it fails)."""
        import nbformat  # slow to import: only when the run ends

        from .plan import refresh_redactor
        from .render import HtmlRenderer

        status, reason = kernel_journal["status"], kernel_journal.get("reason")
        nb = nbformat.from_dict(self.cells.notebook())
        failing = mark_failure(nb, status, reason)
        _fold_traceback(nb, kernel_journal, failing)
        refresh_redactor(self.redactor, _env_of(self), {}, self.project, self.run_dir / "attachments",
                         dict(kernel_journal))
        done = record.complete_record(self.base, status=status, reason=self.redactor.scrub(reason) if reason else None,
                                      seconds=time.monotonic() - self._t0, kernel_journal=kernel_journal,
                                      failing_cell=failing, results=results)
        done["versions"] = {**done["versions"], "kernel_python": record.versions().get("python")}
        notebook = self.redactor.scrub_obj(nb)
        try:
            page = HtmlRenderer().render(nbformat.from_dict(notebook), html_header(done))
        except Exception as exc:  # the notebook is still archived; the record says why the page is missing
            done["reason"] = f"{done['reason'] or done['status']}; HTML page not built ({type(exc).__name__}: {exc})"
            page = None
        return done, notebook, page


def _env_of(run: InteractiveRun) -> Environment:
    from ..config import environments

    return environments.load_environment(run.base["env"], run.project)


def _fold_traceback(nb: Any, kernel_journal: Journal, failing: dict[str, Any] | None) -> None:
    """The full traceback of the error that stopped the run, folded, under its cell: the notebook
    showed the person one line and the hint."""
    error = kernel_journal.get("error")
    if not error or failing is None:
        return
    import nbformat

    text = html.escape(str(error.get("traceback", "")), quote=False)
    cell = nbformat.v4.new_markdown_cell(
        f"<details><summary>Full traceback ({html.escape(str(error.get('type')))})</summary>"
        f"<pre>{text}</pre></details>")
    cell.metadata["tags"] = ["drillbook-traceback"]
    nb.cells.insert(failing["index"] + 2, cell)  # mark_failure put its banner on top: the cell moved down one


def open_run(opening: Opening, run_id: str | None, redactor: Redactor) -> InteractiveRun:
    """Lock the environment and open the run folder and marker of a person's run (``LockBusy``
    when another run holds the environment)."""
    return InteractiveRun(opening, run_id or "", redactor)
