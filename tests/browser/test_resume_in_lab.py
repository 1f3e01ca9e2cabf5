"""Resuming a failed run in a real JupyterLab driven by Debian's chromium, in a temporary project (no lab).

The five-step runbook of tests/test_resume.py, one step per cell. Run All fails at step 3 (its
precondition file is missing); the operator repairs it, sets ``resume = "<run id>"`` in the
parameters cell and runs all again: steps 1–2 are skipped with the values the first run journalled,
3–5 run, and both runs are signed bundles that verify. Screenshots of each stage go to the test's folder.
Under CI=true a missing browser is a failure, never a skip.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, Project, cli
from drillbook.site import build as site_build
from labbrowser import JupyterLab, Lab, Shots, wait_until
from sitesupport import CHROMIUM, CHROMIUM_FLAGS, QuietHandler, require_browser

pytestmark = pytest.mark.integration
CELLS = [
    "import drillbook\nfrom pathlib import Path\n"
    "drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, resume=resume,\n"
    "                        incident='INC-9', severity='P1')\n"
    "tally = Path(workdir) / 'tally.txt'\n"
    "def did(title, value):\n    with open(tally, 'a') as f:\n        f.write(title + '\\n')\n    return value\n"
    "drill.require('steady state', (Path(workdir) / 'steady').exists())",
    "fenced = drill.step('Fence the old primary', lambda: did('fence', {'lsn': 42}), mutating=True, resume='skip')",
    "promoted = drill.step('Promote the standby', lambda: did('promote', 'pg2'), mutating=True, resume='skip')",
    "def repoint():\n    if not (Path(workdir) / 'dns-ready').exists():\n        raise RuntimeError('DNS is not ready')\n"
    "    return did('repoint', f'app -> {promoted}')\n"
    "drill.step('Repoint the application', repoint, mutating=True, resume='skip')",
    "drill.step('Check replication', lambda: did('check', fenced['lsn'] + 1))",
    "drill.step('Record the new primary', lambda: did('record', promoted), mutating=True)",
    "drill.finish()",
]


def _params(work: Path, resume: str | None) -> str:
    return (f'env = "local"\ndry_run = False\napprove = []\nrun_id = None\nchange = None\n'
            f'resume = {resume!r}\nworkdir = {str(work)!r}')


@pytest.fixture
def lab(project: Project, tmp_path: Path) -> Iterator[Lab]:
    require_browser()
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.metadata["drillbook"] = {"kind": "runbook", "title": "Five steps", "owner": "tests"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(_params(Path("."), None))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, str(project.root / "runbooks" / "five.ipynb"))
    env = {"DRILLBOOK_OPERATOR": "Ana Oncall", "DRILLBOOK_HOME": os.environ["DRILLBOOK_HOME"],
           "DRILLBOOK_PROJECT": str(project.root)}
    server = JupyterLab(project.root, tmp_path / "jupyterlab", env).start()
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900})
            try:
                yield Lab(context.new_page(), server, Shots(tmp_path / "screens"))
            finally:
                context.close()
    finally:
        server.stop()
    print(f"screenshots: {tmp_path / 'screens'}")


def _records(project: Project) -> list[dict]:
    found = [json.loads((p / "record.json").read_text()) for p in project.run_dirs()]
    return sorted(found, key=lambda r: r["started_at"])


def test_an_operator_resumes_a_run_that_failed_at_step_3_of_5(lab: Lab, project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "steady").touch()
    lab.open("runbooks/five.ipynb")
    lab.set_source("resume = None", _params(work, None))
    lab.run_all()
    failed = lab.wait_for_output("def repoint", "DNS is not ready")
    assert "Traceback" not in failed  # one line and the hint
    lab.shots.take(lab.page, "failed-at-step-3", show=lab.code_cell("def repoint"))
    [first] = wait_until("the failed run's bundle", lambda: _records(project) or None)
    assert first["status"] == "error" and first["mode"] == "interactive"
    assert (work / "tally.txt").read_text().split() == ["fence", "promote"]

    (work / "dns-ready").touch()  # the operator repairs the precondition
    (work / "tally.txt").unlink()
    lab.set_source("resume = None", _params(work, first["run_id"]))
    lab.run_all()
    done = lab.wait_for_output("drill.finish()", "Evidence:")
    assert "PASSED" in done.upper()
    fence = lab.output("'Fence the old primary'")
    assert f"completed in run {first['run_id']}, skipped" in fence
    lab.shots.take(lab.page, "resumed-and-passed", show=lab.code_cell("'Fence the old primary'"))
    assert (work / "tally.txt").read_text().split() == ["repoint", "check", "record"]
    runs = _records(project)
    assert len(runs) == 2 and runs[1]["resumes"] == first["run_id"] and runs[1]["status"] == "passed"
    assert [s["status"] for s in runs[1]["steps"]] == ["skipped", "skipped", "passed", "passed", "passed"]
    assert runs[1]["steps"][3]["value"] == 43 and runs[1]["steps"][2]["value"] == "app -> pg2"
    verified = cli(project, "verify")
    assert verified.code == 0, verified.output
    _incident_on_the_site(lab, project, [r["run_id"] for r in runs])


def _incident_on_the_site(lab: Lab, project: Project, run_ids: list[str]) -> None:
    """The published site's incidents page, opened in the same browser: the incident, its timeline, its verdict."""
    shutil.copy(REPO / "mkdocs.yml", project.root / "mkdocs.yml")
    shutil.copytree(REPO / "docs", project.root / "docs",
                    ignore=lambda folder, names: [n for n in names if Path(folder) == REPO / "docs"
                                                  and n in ("runbooks", "status", "evidence")])
    site_build.publish(project.root, project.archive)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(project.root / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        lab.page.goto(base + "status/", wait_until="load")
        lab.page.locator("nav a", has_text="Incidents").first.click()  # from the dashboard, by the navigation
        wait_until("the incidents page", lambda: "status/incidents" in lab.page.url)
        text = lab.page.locator("article").inner_text()
        assert "INC-9" in text and "resolved" in text and "severity P1" in text and "2 run(s)" in text
        assert "Time to resolution" in text and "met (target 60 min)" in text
        assert f"resuming run {run_ids[0]}" in text and "Fence the old primary: skipped" in text
        assert "Ana Oncall" in text
        lab.shots.take(lab.page, "incidents-page")
        lab.page.locator(f"article a[href*='{run_ids[0]}']").first.click()  # the first run's evidence
        wait_until("the first run's evidence page", lambda: run_ids[0] in lab.page.url)
        assert f"This run was resumed by run {run_ids[1]}" in lab.page.locator("article").inner_text()
    finally:
        server.shutdown()
