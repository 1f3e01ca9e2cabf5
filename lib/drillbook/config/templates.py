"""``drillbook new``: start a runbook or drill from the skeletons in ``notebooks/templates/``."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

from .. import paths
from ..errors import ConfigError, NotFound
from . import catalog

FOLDERS = {"runbook": "runbooks", "drill": "notebooks/drills"}


def new_notebook(name: str, kind: str, title: str, owner: str, project: Path | None = None) -> Path:
    root = project or paths.project_root()
    if kind not in FOLDERS:
        raise ConfigError(f"unknown kind {kind!r}", "use --kind runbook or --kind drill")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ConfigError(f"bad notebook name {name!r}", "use lowercase letters, digits, '-' and '_'")
    if any(p.stem == name for p in catalog.notebook_paths(root)):
        raise ConfigError(f"a notebook named {name!r} already exists", "pick another name")
    template = root / "notebooks" / "templates" / f"{kind}.ipynb"
    if not template.is_file():
        raise NotFound(f"no template at {template}", "restore notebooks/templates/ from the repository")
    nb = nbformat.read(str(template), as_version=4)
    nb.metadata["drillbook"].update(title=title, owner=owner)
    first = nb.cells[0]
    if first.cell_type == "markdown":
        first.source = first.source.replace("TITLE", title)
    target = root / FOLDERS[kind] / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
    return target
