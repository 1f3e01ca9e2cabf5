"""``drillbook incident open``: a per-incident working copy of a runbook.

    incidents/<incident id>/<runbook>.ipynb   the runbook, outputs cleared, ``env = "<E>"`` in its
                                              parameters cell (still a dry run: going live is a
                                              deliberate edit, in the copy)
    incidents/<incident id>/incident.json     {"runbook", "env", "severity", "incident",
                                              "source_sha256"}: ``drillbook.start()`` in a kernel
                                              started in that folder reads it

Everything is checked before anything is written; the folder is made with ``mkdir`` (an existing
incident is never overwritten) and removed again if a write fails, so a refusal leaves nothing.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .. import files, paths
from ..incidentfile import INCIDENT_FILE, validate_severity
from ..config import catalog, environments, notebooks
from ..errors import ConfigError, NotebookError

INCIDENTS_DIR = "incidents"  # under the project root; git-ignored
# An id becomes a folder name: letters, digits, '.', '_' and '-', starting with a letter or digit.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class IncidentCopy:
    incident: str
    runbook: str
    env: str
    severity: str | None
    folder: Path
    notebook: Path
    project: Path

    @property
    def relative_notebook(self) -> str:
        """The copy's path from the project root, as JupyterLab's URL names it."""
        return self.notebook.relative_to(self.project).as_posix()


def validate_incident_id(incident: str | None) -> str:
    """The id given, or a fresh one from the clock (UTC, to the second)."""
    if incident is None:
        return time.strftime("INC-%Y%m%d-%H%M%S", time.gmtime())
    if not _ID.fullmatch(incident) or ".." in incident:
        raise ConfigError(f"not an incident id: {incident!r}",
                          "use letters, digits, '.', '_' and '-' (at most 64), e.g. --incident INC-42")
    return incident


def runbook_path(name: str, project: Path) -> Path:
    """A runbook of the catalog by name (a drill or a loose notebook is not an incident procedure)."""
    path, entry = catalog.find(name, project)
    if entry is None or entry.kind != "runbook" or path.parent != project / "runbooks":
        raise NotebookError(f"{name!r} is not a runbook of this project",
                            "pass a name from `drillbook list --kind runbook`")
    return path


def set_parameter(source: str, name: str, value: object) -> str:
    """The parameters cell's ``source`` with the one assignment to ``name`` given ``value``
    (a literal: a string in double quotes, as the runbooks write them, else ``repr``); the rest
    of the line (its comment) is kept."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for stmt in tree.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id == name and stmt.value.lineno == stmt.value.end_lineno:
            node = stmt.value
            row = node.lineno - 1
            line = lines[row].encode("utf-8")  # ast's offsets count UTF-8 bytes
            literal = json.dumps(value) if isinstance(value, str) else repr(value)  # JSON strings are Python's
            lines[row] = (line[:node.col_offset] + literal.encode("utf-8") + line[node.end_col_offset:]).decode()
            return "".join(lines)
    raise NotebookError(f"the parameters cell has no one-line assignment to {name!r}",
                        f"declare it as `{name} = ...` on one line")


def working_notebook(source: Path, env: str) -> nbformat.NotebookNode:
    """The runbook as the operator gets it: no outputs, no execution counts, ``env`` set."""
    nb = notebooks.read_notebook(source)
    found = notebooks.parameters_cell(nb)
    if found is None:
        raise NotebookError(f"{source.name}: no parameters cell", "tag the cell that sets the defaults 'parameters'")
    _, cell = found
    cell.source = set_parameter(cell.source, "env", env)
    for each in nb.cells:
        if each.cell_type == "code":
            each.outputs, each.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def open_incident(runbook: str, env: str, severity: str | None = None, incident: str | None = None,
                  project: Path | None = None) -> IncidentCopy:
    """Check everything, then write the folder, the copy and ``incident.json``; or raise and write nothing."""
    root = project or paths.project_root()
    source = runbook_path(runbook, root)
    environments.load_environment(env, root)  # unknown or invalid: refused here
    level = validate_severity(severity)
    incident_id = validate_incident_id(incident)
    nb = working_notebook(source, env)
    folder = root / INCIDENTS_DIR / incident_id
    if folder.parent.is_symlink() or (folder.parent.exists() and not folder.parent.is_dir()):
        raise ConfigError(f"{INCIDENTS_DIR}/ is not a folder of this project (a link, or a file)",
                          f"remove {folder.parent} and run this again: working copies live in the project")
    if folder.exists():
        raise ConfigError(f"incident {incident_id} already has a working folder: {folder.relative_to(root)}",
                          "open the copy there, or pass another --incident id")
    record = {"runbook": source.stem, "env": env, "severity": level, "incident": incident_id,
              "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    folder.parent.mkdir(exist_ok=True)
    folder.mkdir()  # raises if another `incident open` made it meanwhile: never two writers
    try:
        target = folder / source.name
        files.write_atomic(target, nbformat.writes(nb) + "\n", mode=0o644)
        files.write_atomic(folder / INCIDENT_FILE, json.dumps(record, indent=1) + "\n", mode=0o644)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return IncidentCopy(incident_id, source.stem, env, level, folder, target, root)
