"""What every runbook must say, beyond valid metadata: a severity and the six sections an on-call
engineer looks for, as Markdown headings (``## Symptoms``, ``## 1. Diagnose``, …).

``drillbook lint`` reports a runbook that lacks one. Drills are not held to this: they prove runbooks.
"""
from __future__ import annotations

import re

import nbformat

from .catalog import Metadata

SECTIONS = ("Symptoms", "Diagnose", "Resolve", "Validate", "Escalate", "Prevent")
SEVERITIES = {"P0": 15 * 60, "P1": 60 * 60, "P2": 4 * 3600, "P3": 24 * 3600}  # response target, seconds
# A Markdown heading, optionally numbered ("## 2. Resolve"), whose text starts with a section's name.
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?:\d+[.)]\s*)?([A-Za-z]+)", re.M)
FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.M | re.S)


def headings(nb: nbformat.NotebookNode) -> list[str]:
    """The first word of every Markdown heading of the notebook (outside code fences)."""
    found: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found += HEADING.findall(FENCE.sub("", str(cell.source)))
    return found


def missing_sections(nb: nbformat.NotebookNode) -> list[str]:
    have = {word.lower() for word in headings(nb)}
    return [name for name in SECTIONS if name.lower() not in have]


def runbook_problems(nb: nbformat.NotebookNode, meta: Metadata) -> list[str]:
    """What a runbook lacks: a severity, the alert or symptom it answers, its sections."""
    problems = []
    if meta.severity is None:
        problems.append("no metadata.drillbook.severity (P0, P1, P2 or P3: response within 15 min, 1 h, 4 h, 24 h)")
    if not (meta.alert or meta.symptom):
        problems.append("no metadata.drillbook.alert or symptom: say which alert or symptom this runbook answers")
    missing = missing_sections(nb)
    if missing:
        problems.append(f"missing section heading(s): {', '.join(missing)} (e.g. a Markdown cell '## {missing[0]}')")
    return problems
