"""The Jupyter pre-save hook that keeps source notebooks clean however they are run.

``jupyter_server_config.py`` at the project root registers :func:`scrub_source_notebook`; a
``jupyter lab`` started there reads it. Every save of a notebook under ``runbooks/`` or
``notebooks/`` (a click on Save, Ctrl+S, autosave) then loses its outputs, execution counts and
widget state, and keeps what its parameters cell says on disk: an operator who set
``dry_run = False`` and a change reference to run it cannot leave them for the next one.

* the runner's parameters (``env``, ``dry_run``, ``approve``, ``run_id``, ``change``) always keep
  their lines from disk: they describe one run, never a default (clearing the outputs first does
  not let them through);
* a notebook saved with outputs or execution counts (it was run) keeps its whole parameters cell
  from disk; an author editing other defaults without running saves them.

Operators run a copy (``drillbook incident open``), which this hook leaves alone.
"""
from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Protocol

SOURCE_FOLDERS = ("runbooks", "notebooks")
RUNNER_PARAMETERS = ("env", "dry_run", "approve", "run_id", "change")  # config.notebooks, without nbformat
log = logging.getLogger("drillbook.presave")

NotebookJSON = dict[str, object]


class ContentsManager(Protocol):
    root_dir: str


def source_project(path: Path) -> Path | None:
    """The project ``path`` is a source notebook of (under its ``runbooks/`` or ``notebooks/``), or None."""
    for parent in path.parents:
        if (parent / "parameters" / "environments").is_dir():
            relative = path.relative_to(parent).parts
            return parent if len(relative) > 1 and relative[0] in SOURCE_FOLDERS else None
    return None


def _parameters_source(nb: NotebookJSON) -> tuple[dict[str, object], str] | None:
    for cell in nb.get("cells", []) or []:
        if isinstance(cell, dict) and cell.get("cell_type") == "code" and \
                "parameters" in (cell.get("metadata", {}) or {}).get("tags", []):
            source = cell.get("source", "")
            return cell, "".join(source) if isinstance(source, list) else str(source)
    return None


def _on_disk(path: Path) -> NotebookJSON | None:
    """The notebook as it is on disk (None: no file yet, or not a notebook)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scrub(nb: NotebookJSON, on_disk: Path) -> list[str]:
    """Strip ``nb`` in place as a source notebook must be saved; returns what was removed."""
    removed = []
    for cell in nb.get("cells", []) or []:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            if cell.get("outputs") or cell.get("execution_count") is not None:
                removed.append("outputs")
            cell["outputs"], cell["execution_count"] = [], None
    disk = _on_disk(on_disk)
    metadata, disk_metadata = nb.get("metadata"), (disk or {}).get("metadata")
    if isinstance(metadata, dict):
        if metadata.pop("widgets", None) is not None:
            removed.append("widget state")
        if isinstance(disk_metadata, dict) and "language_info" in disk_metadata:
            metadata["language_info"] = disk_metadata["language_info"]  # the kernel's, not the author's
    found = _parameters_source(disk) if disk else None
    saved, current = (found[1] if found else None), _parameters_source(nb)
    if saved is not None and current is not None and current[1] != saved:
        kept = saved if "outputs" in removed else _keep_runner_lines(current[1], saved)
        if kept != current[1]:
            current[0]["source"] = kept
            removed.append("parameter values")
    return sorted(set(removed))


def _assignment_lines(source: str) -> dict[str, tuple[int, int]] | None:
    """Runner parameter → the (first, last) line index of its assignment; None if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        else:
            targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in RUNNER_PARAMETERS:
                found[target.id] = (stmt.lineno - 1, (stmt.end_lineno or stmt.lineno) - 1)
    return found


def _keep_runner_lines(current: str, saved: str) -> str:
    """``current`` with each runner parameter's assignment as in ``saved`` (a cell that does not
    parse, or that dropped one of them, is replaced by ``saved`` whole)."""
    now, before = _assignment_lines(current), _assignment_lines(saved)
    if now is None or before is None or set(before) - set(now):
        return saved
    lines, old = current.splitlines(keepends=True), saved.splitlines(keepends=True)
    for name, (first, last) in sorted(now.items(), key=lambda item: -item[1][0]):  # bottom up: indices hold
        if name in before:
            start, end = before[name]
            block = old[start:end + 1]
            if last + 1 < len(lines) and not block[-1].endswith("\n"):
                block[-1] += "\n"  # the saved line was the cell's last, this one is not
            lines[first:last + 1] = block
    return "".join(lines)


def scrub_source_notebook(model: dict[str, object], path: str, contents_manager: ContentsManager,
                          **kwargs: object) -> None:
    """ContentsManager pre-save hook (jupyter_server calls it with keywords before every save)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    target = (Path(contents_manager.root_dir) / path.lstrip("/")).resolve()
    if source_project(target) is None:
        return
    content = model["content"]
    assert isinstance(content, dict)
    removed = scrub(content, target)
    if removed:
        log.warning("drillbook: saved %s without its %s (source notebooks never keep a run; "
                    "run a copy: drillbook incident open)", path, ", ".join(removed))
