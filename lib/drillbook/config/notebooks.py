"""Reading notebooks: the parameters cell, the declared parameters and their types.

Parsing the parameters cell with ``ast`` (rather than asking a kernel) keeps ``lint`` and
``list`` fast and lets the runner reject a wrong parameter type before a kernel starts.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from ..errors import NotebookError
from .yamlfile import load_text

# Parameters every drillbook notebook receives from the runner (see drill.start).
RUNNER_PARAMETERS = ("env", "dry_run", "approve", "run_id", "change")


@dataclass(frozen=True)
class Parameter:
    name: str
    type_name: str  # "int", "float", "str", "bool", "list", "dict", "None" or an annotation
    default: Any  # the literal default, or None when it is an expression
    source: str  # the default as written


def read_notebook(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise NotebookError(f"notebook not found: {path}") from None
    except (json.JSONDecodeError, nbformat.reader.NotJSONError, UnicodeDecodeError) as exc:
        raise NotebookError(f"{path}: not a notebook (invalid JSON: {exc})") from None
    except Exception as exc:  # nbformat raises several unrelated types for bad documents
        raise NotebookError(f"{path}: not a readable notebook: {exc}") from None


def parameters_cell(nb: nbformat.NotebookNode) -> tuple[int, nbformat.NotebookNode] | None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return index, cell
    return None


def _type_of(node: ast.expr | None, annotation: ast.expr | None) -> tuple[str, Any]:
    default: Any = None
    try:
        default = ast.literal_eval(node) if node is not None else None
        literal = True
    except ValueError:
        literal = False
    if annotation is not None:
        return ast.unparse(annotation), default
    if not literal:
        return "expr", None
    return ("None" if default is None else type(default).__name__), default


def declared_parameters(nb: nbformat.NotebookNode, path: Path | str = "notebook") -> dict[str, Parameter]:
    """The parameters declared in the notebook's parameters cell, in order."""
    found = parameters_cell(nb)
    if found is None:
        raise NotebookError(
            f"{path}: no parameters cell",
            "tag the cell that sets the defaults with 'parameters' (Property Inspector → Cell Tags)",
        )
    _, cell = found
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise NotebookError(f"{path}: parameters cell does not parse: {exc.msg} (line {exc.lineno})") from None
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value, annotation = stmt.targets[0].id, stmt.value, None
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name, value, annotation = stmt.target.id, stmt.value, stmt.annotation
        else:
            continue
        type_name, default = _type_of(value, annotation)
        params[name] = Parameter(name, type_name, default, ast.unparse(value) if value is not None else "")
    return params


def drillbook_metadata(nb: nbformat.NotebookNode) -> dict[str, Any] | None:
    meta = nb.get("metadata", {}).get("drillbook")
    return dict(meta) if meta is not None else None


def has_outputs(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of code cells that carry outputs or execution counts (not allowed in source)."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def coerce_parameter(param: Parameter, raw: Any, origin: str) -> Any:
    """Convert a value given on the command line (a string) or in YAML to the declared type."""
    kind = param.type_name.split("[")[0]

    def bad() -> NotebookError:
        return NotebookError(
            f"parameter {param.name!r} from {origin} expects {param.type_name} "
            f"(default {param.source}), got {raw!r}",
            f"pass a value of type {param.type_name}, e.g. -p {param.name}={param.source}",
        )

    if kind == "str":
        if isinstance(raw, str):
            return raw
        raise bad()
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[raw.lower()]
        raise bad()
    if kind in ("int", "float"):
        number = int if kind == "int" else float
        if isinstance(raw, bool):
            raise bad()
        if isinstance(raw, int) or (kind == "float" and isinstance(raw, float)):
            return number(raw)
        if isinstance(raw, str):
            try:
                return number(raw)
            except ValueError:
                pass
        raise bad()
    if kind in ("list", "dict"):
        value = _yaml_value(raw) if isinstance(raw, str) else raw
        if isinstance(value, list if kind == "list" else dict):
            return value
        raise bad()
    # None defaults, Optional annotations and expressions: accept YAML-typed values as given.
    return _yaml_value(raw) if isinstance(raw, str) else raw


def _yaml_value(text: str) -> Any:
    try:  # the bounded reader: a -p value must not expand (aliases) or recurse without end
        return load_text(text)
    except yaml.YAMLError:
        return text
