"""What a run says on screen: the tag every line starts with, and the summary at its end.

Every line a drill prints starts with where it runs and whether it changes anything
(``local · DRY-RUN``, ``prod · LIVE · PRODUCTION``) and ends with the run id, so an output left
on screen by an earlier run is recognisable as such. In a person's notebook PRODUCTION is red and
LIVE bold (ANSI, which Jupyter and the HTML evidence render); unattended runs print plain text.

The summary names what the run changed (the mutating steps that completed), which cleanups ran,
and where its evidence is.
"""
from __future__ import annotations

from pathlib import Path

from .evidence.record import Journal

RED, BOLD, DIM, RESET = "\x1b[1;31m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


def tag(env: str, dry_run: bool, production: bool, colour: bool) -> str:
    """``env · LIVE|DRY-RUN[ · PRODUCTION]``, coloured for a person's notebook."""
    mode = "DRY-RUN" if dry_run else (f"{BOLD}LIVE{RESET}" if colour else "LIVE")
    prod = (f" · {RED}PRODUCTION{RESET}" if colour else " · PRODUCTION") if production else ""
    return f"{env} · {mode}{prod}"


def line(text: str, run_id: str, label: str, colour: bool) -> str:
    """One output line of run ``run_id``: its tag, the text, the run id."""
    suffix = f"{DIM}[run {run_id}]{RESET}" if colour else f"[run {run_id}]"
    return f"{label} │ {text}  {suffix}"


def changed(data: Journal) -> list[str]:
    """The mutating steps that completed: what this run changed."""
    return [s["title"] for s in data["steps"] if s.get("mutating") and s.get("status") == "passed"]


def summary(data: Journal, evidence: Path | None = None) -> str:
    """The run's outcome, each step, check, measure and cleanup, what it changed and its evidence."""
    d = data
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
    done = changed(d)
    lines.append(f"Changed: {', '.join(done)}" if done else "Changed: nothing")
    ran = [c["title"] for c in d["cleanups"] if c.get("status") in ("passed", "failed")]
    lines.append(f"Cleanups run: {', '.join(ran)}" if ran else "Cleanups run: none")
    if evidence is not None:
        lines.append(f"Evidence: {evidence}")
        lines.append(f"Outputs of this run end with [run {d['run_id']}]; any other output on screen is from an earlier run.")
    return "\n".join(lines)
