"""The runner under stress: threads that import at once, a warm-up or a worker that fails, output
the kernel writes below Python's ``sys.stdout``. Whatever happens, a `drillbook run` that started
leaves one bundle with the real reason, and no secret reaches the terminal or the evidence.

Faults are injected into a real `drillbook` process (real papermill, real kernels) by a short
prelude run before the CLI: an import hook that forces one interleaving of two threads, or a patch.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from conftest import FIXTURES, CliResult, Project, cli

pytestmark = pytest.mark.integration


def run_with_prelude(project: Project, prelude: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """`drillbook ARGS` in a fresh interpreter that first executes ``prelude`` (a hook or a patch)."""
    code = textwrap.dedent(prelude) + "\nfrom drillbook.cli import main\nmain(sys.argv[1:])\n"
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=project.root, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)
    return CliResult(done.returncode, done.stdout, done.stderr)


def only_bundle(project: Project) -> tuple[Path, dict]:
    runs = project.run_dirs()
    assert len(runs) == 1, runs
    return runs[0], json.loads((runs[0] / "record.json").read_text())


# ----------------------------------------------------------------------------- item 1: the import race
# The interleaving seen in the field, forced: the papermill worker is inside jupyter_client/__init__
# (holding it) when the warm-up, importing nbconvert, enters jupyter_client.manager directly; each
# then needs a module the other holds, and Python hands the worker the half-initialised manager.
# The hook pauses a thread just before a module's code runs (its module lock held, as in a slow
# import); it cannot pause in find_spec, which runs under the global import lock. With the imports
# done before either thread starts, neither thread imports these and the hook never fires.
# Bounded waits: if the interleaving cannot happen, the hook lets go after 30 s.
FORCE_IMPORT_RACE = """
    import sys, threading
    from importlib.machinery import PathFinder

    worker_in_package, warm_up_in_manager = threading.Event(), threading.Event()
    GATES = {  # (thread, module about to run) -> what to do first
        ("drillbook-papermill", "jupyter_client.asynchronous"): lambda: (worker_in_package.set(),
                                                                         warm_up_in_manager.wait(30)),
        ("drillbook-html-warmup", "nbconvert"): lambda: worker_in_package.wait(30),
        ("drillbook-html-warmup", "jupyter_client.manager"): warm_up_in_manager.set,
    }

    class Gate:
        def __init__(self, loader, before):
            self.loader, self.before = loader, before

        def __getattr__(self, name):
            return getattr(self.loader, name)

        def create_module(self, spec):
            return self.loader.create_module(spec)

        def exec_module(self, module):
            self.before()
            self.loader.exec_module(module)

    class Interleave:
        def find_spec(self, name, path=None, target=None):
            before = GATES.get((threading.current_thread().name, name))
            if before is None:
                return None
            spec = PathFinder.find_spec(name, path, target)
            spec.loader = Gate(spec.loader, before)
            return spec

    sys.meta_path.insert(0, Interleave())
"""


def test_worker_and_warm_up_importing_at_once_do_not_break_the_run(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = run_with_prelude(project, FORCE_IMPORT_RACE, "run", "passes", "--env", "local")
    assert "partially initialized module" not in result.output
    assert result.code == 0, result.output
    _, record = only_bundle(project)
    assert record["status"] == "passed", record["reason"]


# ----------------------------------------------------------------------------- a worker thread fails
WARM_UP_FAILS = """
    import sys
    from drillbook.runner import render

    def broken_warm_up(self):
        self._error = ImportError("cannot import name 'locate_profile' from partially initialized module 'IPython.paths'")

    render.HtmlRenderer._warm = broken_warm_up
"""


def test_a_failed_html_warm_up_still_archives_the_run_as_an_error_with_its_reason(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = run_with_prelude(project, WARM_UP_FAILS, "run", "passes", "--env", "local")
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    bundle, record = only_bundle(project)
    assert record["status"] == "error"
    assert record["reason"] == ("the HTML page could not be prepared: ImportError: cannot import name 'locate_profile' "
                                "from partially initialized module 'IPython.paths'")
    assert f"ERROR passes on local — {record['reason']}" in result.stdout
    assert [s["status"] for s in record["steps"]] == ["passed"]  # the notebook itself ran, and says so
    assert sorted(p.name for p in bundle.iterdir()) == ["MANIFEST", "notebook.ipynb", "record.json"]
    assert "drillbook: this run ended `error`" in (bundle / "notebook.ipynb").read_text()
    assert not list((project.state / "inflight").glob("*.json"))  # a finished run, not one to recover
    assert [json.loads(line)["status"] for line in (project.archive / "ledger.jsonl").read_text().splitlines()] == [
        "error"]
    assert cli(project, "verify").code == 0


# Importing papermill fails in whichever thread imports it (a broken installation).
PAPERMILL_IMPORT_FAILS = """
    import sys

    class NoPapermill:
        def find_spec(self, name, path=None, target=None):
            if name == "papermill":
                raise ImportError("papermill is broken here")
            return None

    sys.meta_path.insert(0, NoPapermill())
"""


def test_a_runner_that_cannot_import_papermill_records_the_real_reason(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = run_with_prelude(project, PAPERMILL_IMPORT_FAILS, "run", "passes", "--env", "local")
    assert result.code == 1, result.output
    bundle, record = only_bundle(project)
    assert record["status"] == "error" and record["reason"] == "ImportError: papermill is broken here"
    assert "ended without a result" not in result.output
    assert "status-error" in (bundle / "notebook.html").read_text()  # the source notebook, with the banner


RENDER_FAILS = """
    import sys
    from drillbook.runner import render

    def broken_render(self, nb, header):
        raise ValueError("unrenderable output")

    render.HtmlRenderer.render = broken_render
"""


def test_a_notebook_that_cannot_be_rendered_is_archived_without_its_page(project: Project) -> None:
    project.add_notebook("check_fails.ipynb")
    result = run_with_prelude(project, RENDER_FAILS, "run", "check_fails", "--env", "local")
    assert result.code == 1, result.output
    bundle, record = only_bundle(project)
    assert record["status"] == "error"
    assert record["reason"] == ("check failed: replica caught up; "
                                "the notebook could not be rendered to HTML: ValueError: unrenderable output")
    assert not (bundle / "notebook.html").exists() and (bundle / "notebook.ipynb").is_file()
    assert cli(project, "verify").code == 0


ARCHIVING_FAILS = """
    import sys
    from drillbook import scraps

    def broken_reader(nb):
        raise RuntimeError("scrap reader broke")

    scraps.read_scraps = broken_reader
"""


def test_a_runner_bug_while_archiving_still_leaves_an_error_record(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = run_with_prelude(project, ARCHIVING_FAILS, "run", "passes", "--env", "local")
    assert result.code == 1, result.output
    bundle, record = only_bundle(project)
    assert record["status"] == "error"
    assert record["reason"] == "the runner failed while archiving the run: RuntimeError: scrap reader broke"
    assert sorted(p.name for p in bundle.iterdir()) == ["MANIFEST", "record.json"]  # nothing unverified is kept
    assert not list((project.state / "inflight").glob("*.json"))
    assert cli(project, "verify").code == 0


# The operator's Ctrl-C (or a service manager's SIGTERM) arrives just as the run is being archived.
SIGNAL_WHILE_ARCHIVING = """
    import os, signal, sys
    from drillbook import scraps

    read_scraps = scraps.read_scraps

    def signalled_reader(nb):
        os.kill(os.getpid(), signal.SIGTERM)
        return read_scraps(nb)

    scraps.read_scraps = signalled_reader
"""


def test_a_signal_while_the_run_is_archived_does_not_lose_the_bundle(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = run_with_prelude(project, SIGNAL_WHILE_ARCHIVING, "run", "passes", "--env", "local")
    assert result.code == 0, result.output
    _, record = only_bundle(project)
    assert record["status"] == "passed"  # the run had finished: the signal came too late to abort it
    assert not list((project.state / "inflight").glob("*.json"))


# ----------------------------------------------------------------------------- item 5: fd-level output
FD_LEAKS = '''\
import logging, os, subprocess, sys
secret = os.environ["DRILLBOOK_FD_TOKEN"]
os.system(f"echo system-out {secret}; echo system-err {secret} >&2")
subprocess.run(["sh", "-c", f"echo subprocess-out {secret}"], check=True)
os.write(1, f"fd1 {secret}\\n".encode())
os.write(2, f"fd2 {secret}\\n".encode())
logging.getLogger("leaky").addHandler(logging.StreamHandler(sys.__stderr__))
logging.getLogger("leaky").warning("logged %s", secret)
'''
CHANNELS = ("system-out", "system-err", "subprocess-out", "fd1", "fd2", "logged")


def leaky_notebook(project: Project, name: str, title: str, child: str | None = None) -> None:
    """A catalogued drill writing the secret below sys.stdout (and, with ``child``, running that one)."""
    nb = nbformat.read(str(FIXTURES / "notebooks" / "passes.ipynb"), as_version=4)
    nb.metadata["drillbook"]["title"] = title
    nb.cells[1].source += '\ntoken_ref = "env:DRILLBOOK_FD_TOKEN"'
    body = [FD_LEAKS] + ([f'drill.run_notebook("{child}", {{"token_ref": token_ref}})'] if child else [])
    nb.cells[3:] = [nbformat.v4.new_code_cell(source) for source in body] + [nbformat.v4.new_code_cell("drill.finish()")]
    (project.root / "notebooks" / "drills" / f"{name}.ipynb").write_text(nbformat.writes(nb))


def test_kernel_output_below_sys_stdout_is_archived_scrubbed_and_never_printed(project: Project) -> None:
    token = f"fdtok-{secrets.token_hex(8)}"
    leaky_notebook(project, "fd-child", "Child writing below sys.stdout")
    leaky_notebook(project, "fd-parent", "Parent writing below sys.stdout", child="fd-child")
    result = cli(project, "run", "fd-parent", "--env", "local", env={"DRILLBOOK_FD_TOKEN": token})
    assert token not in result.output
    assert result.code == 0, result.output
    bundle, record = only_bundle(project)
    leaked = [p for p in bundle.rglob("*") if p.is_file() and token in p.read_text(errors="replace")]
    assert leaked == []
    for log in ("kernel.log", "fd-child.kernel.log"):  # the parent's kernel and the child's
        text = (bundle / "attachments" / log).read_text()
        assert [f"{c} [REDACTED:parameters.token_ref]" in text for c in CHANNELS] == [True] * len(CHANNELS), text
    assert json.loads((bundle / "attachments" / "fd-child.journal.json").read_text())["status"] == "passed"
    assert cli(project, "verify").code == 0


# ----------------------------------------------------------------------------- cold runs, four at a time
def test_twelve_cold_runs_four_at_a_time_all_pass(project: Project, tmp_path: Path) -> None:
    """Nothing cached (no bytecode): every import is slow, so any window between threads is wide."""
    project.add_notebook("passes.ipynb")
    for n in range(4):  # one environment per concurrent run: runs on one environment queue instead
        project.write_env(f"cold{n}", "hosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 30\n")

    def cold_run(index: int) -> CliResult:
        cache = tmp_path / f"pycache-{index}"  # empty: nothing compiled is reused, not even between runs
        cache.mkdir()
        return cli(project, "run", "passes", "--env", f"cold{index % 4}", "--wait", "600",
                   env={"PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}, timeout=900)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(cold_run, range(12)))
    failures = [r.output for r in results if r.code != 0]
    assert failures == []
    statuses = [json.loads((run / "record.json").read_text())["status"] for run in project.run_dirs()]
    assert statuses == ["passed"] * 12
    assert cli(project, "verify").code == 0
