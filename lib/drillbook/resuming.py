"""A resumed run, on the kernel's side: which steps the run it resumes completed, and their values.

Kernel state cannot be carried from one run to the next, so a step's return value is journalled
(``value`` in the step, JSON, scrubbed with the rest of the journal). When a run resumes another,
the runner (or ``drillbook.start(resume=…)``) writes ``resume.json`` in the run's private folder:
the steps of the run it resumes, as that run journalled them. A step declared ``resume="skip"``
whose earlier self completed is then not run again: it is journalled as ``skipped`` and hands its
journalled value on. Every other step (the default ``resume="run"``: read-only diagnosis,
verification, the steady-state check) runs again.

Steps are matched by title and by how many steps of that title came before, so a runbook that
runs the same step twice resumes each in its place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import journal
from .errors import DrillbookError
from .evidence.record import Journal, Step

HANDOVER_NAME = "resume.json"
RESUME_CHOICES = ("skip", "run")
COMPLETED = ("passed", "skipped")  # a step skipped by an earlier resume completed before it
# What a step returned that JSON cannot hold (or that is too large to rewrite with the journal after every
# event) is not journalled: the step cannot be skipped later, it runs again.
UNKEPT = "unkept"
MAX_VALUE_CHARS = 65536
NOT_A_STEP = "not-applicable"  # journalled by drill.not_applicable(), never by step(): not counted


@dataclass
class Carried:
    """The earlier run's completed steps, by (title, occurrence); loaded on the first step."""

    resumes: str | None = None
    steps: dict[tuple[str, int], Step] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    loaded: bool = False


class Resumable(Protocol):
    """The parts of a ``Drill`` a skipped step needs."""

    run_dir: Path | None
    carried: Carried
    data: Journal

    def _save(self) -> None: ...

    def _say(self, text: str) -> None: ...


class _Run:
    """The answer of ``carried`` when the step must run (its value may be anything, even None)."""


RUN = _Run()


def write_handover(run_dir: Path, resumes: str, steps: list[Step]) -> None:
    """What the resumed run's kernel reads: the run it resumes and that run's steps."""
    journal.write_json_atomic(run_dir / HANDOVER_NAME, {"resumes": resumes, "steps": steps})


def _load(carried: Carried, run_dir: Path | None) -> None:
    carried.loaded = True
    try:
        data = json.loads((run_dir / HANDOVER_NAME).read_text(encoding="utf-8")) if run_dir else None
    except (OSError, ValueError):
        return  # not a resumed run
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return
    carried.resumes = str(data.get("resumes"))
    counts: dict[str, int] = {}
    for step in data["steps"]:
        if not isinstance(step, dict) or not isinstance(step.get("title"), str) or step.get("status") == NOT_A_STEP:
            continue
        n = counts[step["title"]] = counts.get(step["title"], 0) + 1
        carried.steps[(step["title"], n)] = step  # type: ignore[assignment]  # read back as it was written


def carried(run: Resumable, title: str, mutating: bool, gate: str | None, resume: str) -> object:
    """The journalled value of step ``title`` when it may be skipped (it is then journalled as
    ``skipped``), else ``RUN``: the step runs."""
    if resume not in RESUME_CHOICES:
        raise DrillbookError(f"step {title!r}: resume must be 'skip' or 'run', not {resume!r}",
                             "resume='skip' for a step safe to skip once completed; the default runs it again")
    if not run.carried.loaded:
        _load(run.carried, run.run_dir)
    n = run.carried.seen[title] = run.carried.seen.get(title, 0) + 1
    before = run.carried.steps.get((title, n))
    if (resume != "skip" or before is None or before.get("status") not in COMPLETED
            or before.get("value_kept") == UNKEPT):
        return RUN
    origin = before.get("resumed_from") or run.carried.resumes
    now = journal.now_iso()
    step: Step = {"title": title, "mutating": mutating, "gate": gate, "started_at": now, "ended_at": now,
                  "seconds": 0.0, "status": "skipped", "detail": f"completed in run {origin}; not run again",
                  "resumed_from": origin, "value": before.get("value")}
    run.data["steps"].append(step)
    run._save()
    shown = f": {step['value']}" if _short(step["value"]) else ""
    run._say(f"↷ {title} — completed in run {origin}, skipped{shown}")
    return before.get("value")


def keep(step: Step, value: object) -> None:
    """Journal what a step returned, when JSON can hold it, so a resumed run can hand it on."""
    try:
        kept = len(json.dumps(value, allow_nan=False)) <= MAX_VALUE_CHARS
    except (TypeError, ValueError, RecursionError):
        kept = False
    if kept:
        step["value"] = value
    else:
        step["value_kept"] = UNKEPT


def _short(value: object) -> bool:
    return isinstance(value, (int, float, str)) and len(str(value)) <= 80 and "\n" not in str(value)
