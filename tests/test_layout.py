"""The package's layout, read from its source with ``ast``: what the house rules forbid, found and named.

* no import circles: every ``import`` and ``from … import`` counts, at module level, inside functions and
  under ``if TYPE_CHECKING:``, relative or absolute; ``from . import x`` is an import of the submodule
  ``x`` when there is one, of the package otherwise;
* no module over 400 lines, no function (or method) over 60 lines;
* only the lab itself (``drillbook.lab`` and below) and the CLI import the lab.

The checks are plain functions over a folder of source, so the last test proves each one on a tiny
synthetic package that breaks every rule once.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "lib" / "drillbook"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LAB = "lab"
CLI = "cli"

Graph = dict[str, set[str]]


# --------------------------------------------------------------------------- modules and imports
def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → its file, for every ``.py`` under the package folder ``root``."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = path
    return modules


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from`` import names, with the dots of a relative import resolved."""
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(importer: str, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]) -> set[str]:
    """The package's modules one import statement loads (outside modules are ignored)."""
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    else:
        target = _absolute(importer, modules[importer].name == "__init__.py", node)
        # `from x import y` imports the submodule x.y when there is one, else a name defined in x.
        found = {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
    return {name for name in found if name in modules and name != importer}


def import_graph(modules: Mapping[str, Path]) -> Graph:
    """Module → the package's modules it imports anywhere in its source."""
    graph: Graph = {}
    for name, path in modules.items():
        statements = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[name] = {target for n in statements for target in imported_modules(name, n, modules)}
    return graph


# --------------------------------------------------------------------------- circles
def _reachable(graph: Graph, start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _shortest_cycle(graph: Graph, start: str, members: set[str]) -> list[str]:
    """The shortest import path from ``start`` back to itself inside one circle (breadth first)."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph[path[-1]] & members):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append(path + [nxt])
    raise AssertionError(f"{start} is not on a circle")  # callers pass members of a circle only


def circles(graph: Graph) -> list[str]:
    """One line per group of modules that import each other, naming one circle through it."""
    reach = {name: _reachable(graph, name) for name in graph}
    found: list[str] = []
    done: set[str] = set()
    for name in sorted(graph):
        if name in done or name not in reach[name]:
            continue
        members = {other for other in reach[name] if name in reach[other]}
        done |= members
        cycle = " → ".join(_shortest_cycle(graph, name, members))
        found.append(f"import circle among {', '.join(sorted(members))}: {cycle}")
    return found


# --------------------------------------------------------------------------- sizes
def long_modules(modules: Mapping[str, Path], limit: int = MAX_MODULE_LINES) -> list[str]:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    return [f"module {name} has {n} lines (at most {limit})" for name, n in sizes.items() if n > limit]


def _functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method under ``node``, with its qualified name (Class.method, outer.inner)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}.{child.name}", child
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _functions(child, f"{prefix}.{child.name}")


def long_functions(modules: Mapping[str, Path], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found: list[str] = []
    for name, path in modules.items():
        for qualified, func in _functions(ast.parse(path.read_text()), name):
            lines = (func.end_lineno or func.lineno) - func.lineno + 1
            if lines > limit:
                found.append(f"function {qualified} has {lines} lines (at most {limit})")
    return found


# --------------------------------------------------------------------------- the lab
def _in_lab(module: str, package: str) -> bool:
    return module == f"{package}.{LAB}" or module.startswith(f"{package}.{LAB}.")


def lab_importers(graph: Graph, package: str) -> list[str]:
    """Modules outside the lab, other than the CLI's, that import it."""
    cli = f"{package}.{CLI}"
    outside = [m for m in graph if not _in_lab(m, package) and m != cli and not m.startswith(cli + ".")]
    return [f"module {m} imports the lab ({', '.join(sorted(t for t in graph[m] if _in_lab(t, package)))})"
            for m in sorted(outside) if any(_in_lab(t, package) for t in graph[m])]


def layout_problems(root: Path) -> list[str]:
    modules = module_files(root)
    graph = import_graph(modules)
    return circles(graph) + long_modules(modules) + long_functions(modules) + lab_importers(graph, root.name)


# --------------------------------------------------------------------------- the tests
def test_drillbook_keeps_the_layout_rules() -> None:
    problems = layout_problems(PACKAGE)
    assert not problems, f"{len(problems)} layout problem(s):\n" + "\n".join(problems)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _function(name: str, lines: int, indent: str = "") -> str:
    """The source of a function of exactly ``lines`` lines, its ``def`` line included."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}(self) -> None:\n{body}"


def test_each_check_finds_its_problem_in_a_synthetic_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "a.py": "from . import b\n",  # a submodule, through `from . import`
        "b.py": "def f() -> None:\n    import pkg.c\n",  # absolute, inside a function
        "c.py": "from .a import VALUE\nVALUE = 1\n",  # a name defined in a: an import of a
        "d.py": "import pkg.a\nfrom pkg import c\n",  # imports the circle, is not on it
        "sub/__init__.py": "from .. import d\n",
        "sub/deep.py": "from ..sub import d\nfrom .. import d as e\n",  # a name in sub; the module d
        "sizes.py": f"{_function('fits', 60)}\nclass K:\n{_function('too_long', 61, '    ')}",
        "big.py": "X = 1\n" * 401,
        "lab/__init__.py": "from . import up\n",
        "lab/up.py": "from .. import b\n",  # the lab may import the rest
        "user.py": "def g() -> None:\n    from .lab import up\n",
        "cli/__init__.py": "from . import lab\n",  # the CLI may import the lab
        "cli/lab.py": "from .. import lab\n",
    })
    modules = module_files(pkg)
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.a", "pkg.c"} and graph["pkg.sub"] == {"pkg.d"}
    assert graph["pkg.sub.deep"] == {"pkg.sub", "pkg.d"} and graph["pkg.lab"] == {"pkg.lab.up"}
    assert circles(graph) == ["import circle among pkg.a, pkg.b, pkg.c: pkg.a → pkg.b → pkg.c → pkg.a"]
    assert long_functions(modules) == ["function pkg.sizes.K.too_long has 61 lines (at most 60)"]
    assert long_modules(modules) == ["module pkg.big has 401 lines (at most 400)"]
    assert lab_importers(graph, "pkg") == ["module pkg.user imports the lab (pkg.lab.up)"]
    assert len(layout_problems(pkg)) == 4
