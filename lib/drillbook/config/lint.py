"""``drillbook lint``: what a committed runbook or drill notebook must satisfy.

A parameters cell, a kernelspec, no outputs, valid ``metadata.drillbook``, and no environment
passing a parameter the notebook does not declare (papermill would only warn; we refuse). A runbook
also needs a severity and its sections (``runbook_rules``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import DrillbookError
from . import catalog, environments, notebooks, runbook_rules


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def lint_notebook(path: Path, root: Path) -> tuple[list[Problem], set[str] | None]:
    """Problems of one notebook, and its declared parameter names (None if unreadable)."""
    where = _relative(path, root)
    try:
        nb = notebooks.read_notebook(path)
    except DrillbookError as exc:
        return [Problem(where, exc.message)], None
    problems: list[Problem] = []
    declared: set[str] | None = None
    try:
        declared = set(notebooks.declared_parameters(nb, where))
    except DrillbookError as exc:
        problems.append(Problem(where, exc.message.removeprefix(f"{where}: ")))
    if not nb.metadata.get("kernelspec", {}).get("name"):
        problems.append(Problem(where, "no kernelspec (metadata.kernelspec.name)"))
    dirty = notebooks.has_outputs(nb)
    if dirty:
        cells = ", ".join(str(i) for i in dirty[:5])
        problems.append(Problem(where, f"committed outputs in cell(s) {cells}; clear them before committing"))
    try:
        meta = catalog.validate_metadata(notebooks.drillbook_metadata(nb), Path(where))
        expected = dict(catalog.SOURCES).get(str(Path(where).parent))
        if expected and meta.kind != expected:
            problems.append(Problem(where, f"metadata.drillbook.kind is {meta.kind!r} but the notebook lives "
                                           f"in {Path(where).parent}/ (for {expected}s)"))
        if meta.kind == "runbook":
            problems.extend(Problem(where, text) for text in runbook_rules.runbook_problems(nb, meta))
    except DrillbookError as exc:
        problems.append(Problem(where, exc.message.removeprefix(f"{where}: ")))
    return problems, declared


def lint_project(project: Path | None = None) -> list[Problem]:
    root = project or paths.project_root()
    problems: list[Problem] = []
    declared_by_name: dict[str, set[str] | None] = {}
    for path in catalog.notebook_paths(root):
        found, declared = lint_notebook(path, root)
        problems.extend(found)
        declared_by_name[path.stem] = declared
    for name in environments.environment_names(root):
        try:
            env = environments.load_environment(name, root)
        except DrillbookError as exc:
            problems.append(Problem(f"parameters/environments/{name}.yaml", exc.message))
            continue
        problems.extend(_lint_env_parameters(env, declared_by_name))
    return problems


def _lint_env_parameters(env: environments.Environment, declared_by_name: dict[str, set[str] | None]) -> list[Problem]:
    where = f"parameters/environments/{env.name}.yaml"
    problems = []
    for notebook, values in env.parameters.items():
        if notebook not in declared_by_name:
            problems.append(Problem(where, f"parameters.{notebook}: no runbook or drill named {notebook!r}"))
            continue
        declared = declared_by_name[notebook]
        if declared is None:
            continue
        for key in values:
            if key not in declared:
                problems.append(Problem(where, f"parameters.{notebook}.{key}: the notebook declares no parameter {key!r}"))
    return problems
