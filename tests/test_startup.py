"""Start-up: each command imports what its verb needs, checked in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import Project


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (which must not print)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_help_imports_no_heavy_library() -> None:
    code = ("import contextlib, io\nfrom drillbook import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    cli.main(['--help'])")
    loaded = _modules_after(code)
    assert "drillbook.cli" in loaded
    for heavy in ("pydantic", "pandas", "nbconvert", "papermill", "nbformat", "matplotlib", "drillbook.drill"):
        assert heavy not in loaded, f"drillbook --help imported {heavy}"


def test_package_import_leaves_the_notebook_api_unloaded_until_used() -> None:
    assert "drillbook.drill" not in _modules_after("import drillbook")
    loaded = _modules_after("import drillbook\nassert drillbook.start is __import__('drillbook.drill').drill.start")
    assert "drillbook.drill" in loaded


def test_unknown_package_attribute_is_an_attribute_error() -> None:
    import drillbook

    with pytest.raises(AttributeError, match="no_such_name"):
        drillbook.no_such_name  # noqa: B018


def test_runner_imports_leave_out_papermills_hdfs_backend() -> None:
    code = ("from drillbook.runner.supervise import import_runner\nimport_runner()\nimport sys\n"
            "assert 'pyarrow' not in sys.modules and 'numpy' not in sys.modules\n"
            "import pyarrow.fs  # kept out of papermill's import only: importable again afterwards")
    loaded = _modules_after(code)
    assert {"papermill", "pyarrow.fs"} <= loaded


def test_run_launches_the_kernel_before_importing_papermill_and_nbconvert(project: Project) -> None:
    """The kernel boots in its own process while the runner imports papermill and nbconvert:
    at the moment the kernel's process is started, neither is imported yet (and the run passes)."""
    notebook = project.add_notebook("trivial.ipynb")
    code = (
        "import subprocess, sys\n"
        "seen = []\n"
        "class Probe(subprocess.Popen):\n"
        "    def __init__(self, args, *a, **kw):\n"
        "        if any('ipykernel' in str(arg) for arg in args):\n"
        "            seen.append(sorted(m for m in ('papermill', 'nbconvert') if m in sys.modules))\n"
        "        super().__init__(args, *a, **kw)\n"
        "subprocess.Popen = Probe\n"
        "from drillbook import cli\n"
        "try:\n"
        f"    cli.main(['run', {str(notebook)!r}, '--env', 'local', '-p', 'x=2'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'imported at launch', seen)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[-1] == "exit 0 imported at launch [[]]", done.stdout + done.stderr
