"""Incident mode in a real JupyterLab driven by Debian's chromium, against the session's lab.

One JupyterLab for the module (``labbrowser``), rooted at the lab's project with the repository's
runbooks, started with ``DRILLBOOK_OPERATOR`` set as an on-call engineer's would be. What an
operator does is done in the page (menus, keys, widgets); what happened is read from the lab's
PostgreSQL, the evidence archive and the CLI. Every test leaves the lab healthy (``lab up``
rebuilds a fenced node). Screenshots of each stage go to the test's tmp folder.
Under CI=true a missing browser is a failure, never a skip.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml
from approvalsupport import approver_key
from conftest import REPO, cli
from drillbook.lab import control
from labbrowser import JupyterLab, Lab, Shots, wait_until
from labsupport import LabProject, lab_project  # noqa: F401
from sitesupport import CHROMIUM, CHROMIUM_FLAGS, require_browser

pytestmark = pytest.mark.integration
OPERATOR = "Ana Oncall"
APPROVER = "alice"  # four eyes: lab-prod's gates open with her approval, never with the operator's word
FAILOVER = "postgres-failover.ipynb"


@pytest.fixture(scope="module")
def project(lab_project: LabProject) -> Iterator[LabProject]:  # noqa: F811
    """The lab's project with the runbooks, and two more names for the same lab: ``staging`` and
    ``lab-prod`` (marked production, so a live run needs a change reference and an approval by
    APPROVER: see ``approver``); both, and the working copies, are removed afterwards (the session's
    other modules share the project)."""
    for notebook in (REPO / "runbooks").glob("*.ipynb"):
        (lab_project.root / "runbooks" / notebook.name).write_bytes(notebook.read_bytes())
    local = yaml.safe_load((lab_project.root / "parameters" / "environments" / "local.yaml").read_text())
    access = {"approvers": [{"name": APPROVER, "key": f"keys/{APPROVER}.pub"}]}
    for name, production in (("staging", False), ("lab-prod", True)):
        path = lab_project.root / "parameters" / "environments" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**local, "description": f"the lab, as {name}", "production": production,
                                        **({"access": access} if production else {})}))
    yield lab_project
    for name in ("staging", "lab-prod"):
        (lab_project.root / "parameters" / "environments" / f"{name}.yaml").unlink()
    shutil.rmtree(lab_project.root / "incidents", ignore_errors=True)


@pytest.fixture(scope="module")
def approver(project: LabProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """APPROVER's private key (outside the project); her public key in the project's keys/ meanwhile."""
    keys_folder = project.root / "keys"
    made = not keys_folder.exists()
    yield approver_key(project, tmp_path_factory.mktemp("approver"), APPROVER)  # type: ignore[arg-type]
    (keys_folder / f"{APPROVER}.pub").unlink()
    if made:
        keys_folder.rmdir()


@pytest.fixture(scope="module")
def server(project: LabProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    folder = tmp_path_factory.mktemp("jupyterlab")
    env = {"DRILLBOOK_OPERATOR": OPERATOR, "DRILLBOOK_HOME": str(folder / "home"),
           "DRILLBOOK_TRUST": str(folder / "trust.yaml"),  # the kernels' key, trusted beside it
           "DRILLBOOK_ARCHIVE": str(folder / "archive"), "DRILLBOOK_PROJECT": str(project.root)}
    lab = JupyterLab(project.root, folder, env).start()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def lab(server: JupyterLab, project: LabProject, tmp_path: Path) -> Iterator[Lab]:
    """A fresh browser page on the module's JupyterLab; the lab's pair is healthy again afterwards."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield Lab(context.new_page(), server, Shots(tmp_path / "screens"))
        finally:
            context.close()
            for kernel in server.kernels():  # each test starts from no kernel: no run left open
                server.api("DELETE", f"api/kernels/{kernel['id']}")
            control.up(project.root)  # rebuild a fenced node as the new primary's standby
            assert control.status(project.root).healthy
    print(f"screenshots: {tmp_path / 'screens'}")


def drillbook(server: JupyterLab, *args: str) -> object:
    """The CLI with the same project, archive and key as the kernels JupyterLab starts."""
    return cli(server.root, *args, env=server.env)


def records(server: JupyterLab) -> list[dict]:
    runs = Path(server.env["DRILLBOOK_ARCHIVE"]) / "runs"
    found = [json.loads((p / "record.json").read_text()) for p in runs.iterdir()] if runs.exists() else []
    return sorted(found, key=lambda r: r["started_at"])


def roles(project: LabProject) -> dict[str, str]:
    with project.postgres() as pg:
        return pg.replication.roles()


def open_incident(server: JupyterLab, env: str, incident: str, *more: str) -> str:
    """``drillbook incident open`` as the operator runs it; returns the URL path it prints."""
    result = drillbook(server, "incident", "open", "postgres-failover", "--env", env, "--incident", incident, *more)
    assert result.code == 0, result.output
    url = f"{server.url}lab/tree/incidents/{incident}/{FAILOVER}"
    assert f"open {url}" in result.stdout and server.token not in result.output
    return f"incidents/{incident}/{FAILOVER}"


# --------------------------------------------------------------------------- the pre-save hook, served
def test_jupyter_lab_saves_a_source_runbook_without_its_run(server: JupyterLab) -> None:
    source = server.root / "runbooks" / FAILOVER
    before = source.read_bytes()
    nb = json.loads(before)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "✓ Promote pg2\n"}]
            cell["execution_count"] = 1
            cell["source"] = "".join(cell["source"]).replace("dry_run = True", "dry_run = False")
    server.api("PUT", f"api/contents/runbooks/{FAILOVER}", {"type": "notebook", "format": "json", "content": nb})
    assert source.read_bytes() == before  # the extension `jupyter lab` loaded stripped the run


# --------------------------------------------------------------------------- (2) and (3)
def test_run_all_after_picking_an_environment_runs_there_and_leaves_the_source_unchanged(
        lab: Lab, server: JupyterLab) -> None:
    sources = {p.name: p.read_bytes() for p in (server.root / "runbooks").glob("*.ipynb")}
    written = (server.root / "runbooks" / FAILOVER).stat().st_mtime_ns
    lab.open(f"runbooks/{FAILOVER}")
    lab.select_cell('env = "local"')
    lab.page.keyboard.press("Shift+Enter")  # parameters
    lab.page.keyboard.press("Shift+Enter")  # imports and the picker
    picker = lab.page.locator(".widget-dropdown select")
    picker.wait_for(timeout=60_000)
    picker.select_option("staging")
    wait_until("the picker's badge to follow the choice",
               lambda: "staging: DRY-RUN" in lab.output("environment_picker"))
    lab.shots.take(lab.page, "picked-staging", "incident-picker", show=lab.code_cell("environment_picker"))
    lab.run_all()  # re-runs the parameters cell (env = "local") and the picker: the choice stays
    text = lab.wait_for_output("drill.finish()", "Evidence:")
    lab.shots.take(lab.page, "run-all-finished")
    assert "Run " in text and " on staging: PASSED" in text, text
    assert "staging" in lab.output("drillbook.start(") and "local" not in lab.output("drillbook.start(")
    (record,) = [r for r in records(server) if r["drill"] == "postgres-failover" and r["env"] == "staging"]
    assert record["mode"] == "interactive" and record["dry_run"] is True and record["status"] == "passed"
    wait_until("JupyterLab's autosave to write the run notebook", lambda: (
        server.root / "runbooks" / FAILOVER).stat().st_mtime_ns != written)
    assert {p.name: p.read_bytes() for p in (server.root / "runbooks").glob("*.ipynb")} == sources
    lab.save()  # and an explicit Ctrl+S
    assert {p.name: p.read_bytes() for p in (server.root / "runbooks").glob("*.ipynb")} == sources


# --------------------------------------------------------------------------- (1)
def test_operator_fails_over_production_from_a_working_copy_with_signed_evidence(
        lab: Lab, server: JupyterLab, project: LabProject, approver: Path) -> None:
    before = roles(project)
    old = next(n for n, r in before.items() if r == "primary")
    path = open_incident(server, "lab-prod", "INC-42", "--severity", "P1")
    lab.open(path)
    lab.shots.take(lab.page, "opened", "incident-opened")
    lab.run_all()  # a dry run first
    dry = lab.wait_for_output("drill.finish()", "Evidence:")
    assert "on lab-prod: PASSED" in dry and "Changed: nothing" in dry, dry
    assert lab.page.locator(".widget-dropdown select").is_disabled()  # the incident's environment, fixed
    lab.shots.take(lab.page, "dry-run", "incident-dry-run", show=lab.code_cell("drill.finish()"))
    assert roles(project) == before
    (dry_record,) = [r for r in records(server) if r["env"] == "lab-prod" and r["dry_run"]]
    approved = drillbook(server, "approve", dry_record["run_id"], "--gate", "promote",
                         "--key", str(approver))  # another person, with her own key
    assert approved.code == 0, approved.output
    approval = approved.stdout.split()[1].rstrip(":")

    lab.page.locator(".widget-text input").first.fill("CHG-42")  # production: the change reference first
    lab.set_source('dry_run = True', lab.code_cell('dry_run = True').locator(".cm-content").inner_text()
                   .replace("dry_run = True", "dry_run = False"))
    lab.run_all()  # LIVE: Run All stops at the first gated step and shows its panel there
    fence = f"Fence {{chosen.old}}"
    stopped = lab.wait_for_output(fence, "is not approved")
    assert "stopped before 'Fence" in stopped and "Traceback" not in stopped
    lab.shots.take(lab.page, "stopped-at-gate", "incident-gate", show=lab.code_cell(fence))
    assert roles(project) == before  # nothing changed before the approval

    row = lab.code_cell(fence)
    button = row.locator("button", has_text="Approve")
    assert button.is_disabled()
    assert "paste the id from `drillbook approve`" in lab.output(fence)  # production: the word is not enough
    row.locator(".widget-text input").fill(approval)
    wait_until("Approve to be enabled by the pasted id", button.is_enabled)
    button.click()
    wait_until("the panel to say the approval opened the gate",
               lambda: f"opened by approval {approval} of {APPROVER}" in lab.output(fence))
    lab.shots.take(lab.page, "approved", "incident-approved", show=row)
    lab.page.keyboard.press("Shift+Enter")  # the focus stayed on the button: this cell runs again
    lab.wait_for_output(fence, "✓ Fence")
    lab.menu("Run", "Run Selected Cell and All Below")
    done = lab.wait_for_output("drill.finish()", "Evidence:")
    lab.shots.take(lab.page, "finished", "incident-finished", show=lab.code_cell("drill.finish()"))
    assert "on lab-prod: PASSED" in done and "Changed: Fence" in done, done

    after = roles(project)
    assert after[old] != "primary" and sorted(after.values()).count("primary") == 1, after  # really failed over
    live = [r for r in records(server) if r["env"] == "lab-prod" and not r["dry_run"]]
    assert len(live) == 1
    record = live[0]
    assert (record["mode"], record["status"], record["severity"], record["incident"]) == (
        "interactive", "passed", "P1", "INC-42")
    assert record["operator"].startswith(OPERATOR) and record["operator_source"] == "DRILLBOOK_OPERATOR"
    assert record["change"] == "CHG-42"
    assert [(a["id"], a["approver"]) for a in record["approvals"]] == [(approval, APPROVER)]
    assert record["plan"] == dry_record["plan"]  # the working copy's live run matched what was approved
    assert drillbook(server, "verify").code == 0


# --------------------------------------------------------------------------- (4)
def test_interrupt_mid_step_archives_an_aborted_run_listing_what_changed(
        lab: Lab, server: JupyterLab, project: LabProject) -> None:
    path = open_incident(server, "local", "INC-INT")
    copy = server.root / path
    nb = nbformat.read(str(copy), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("dry_run = True", "dry_run = False").replace(
        'approve = []', 'approve = ["promote"]')
    at = next(i for i, c in enumerate(nb.cells) if "Fence {chosen.old}" in c.source)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(  # a step that outlasts anyone's patience
        'import time\ndrill.step("Wait for the replica", lambda: time.sleep(600))'))
    nbformat.write(nb, str(copy))
    lab.open(path)
    lab.run_all()
    wait_until("the slow step to be running", lambda: "Wait for the replica" in lab.output("time.sleep(600)"),
               timeout=240)
    lab.menu("Kernel", "Interrupt Kernel")
    text = lab.wait_for_output("time.sleep(600)", "Evidence:")
    lab.shots.take(lab.page, "interrupted", "incident-interrupted", show=lab.code_cell("time.sleep(600)"))
    assert "ABORTED" in text and "Changed: Fence" in text, text
    (record,) = [r for r in records(server) if r.get("incident") == "INC-INT"]
    assert record["status"] == "aborted"
    assert [s["status"] for s in record["steps"] if s["title"].startswith("Fence")] == ["passed"]


# --------------------------------------------------------------------------- (5) and (6)
def test_an_open_run_holds_the_environment_and_a_killed_kernel_is_archived_by_the_next_command(
        lab: Lab, server: JupyterLab) -> None:
    path = open_incident(server, "local", "INC-KILL")
    lab.open(path)
    lab.select_cell('env = "local"')
    for _ in range(3):  # parameters, picker, start: the run is open
        lab.page.keyboard.press("Shift+Enter")
    lab.wait_for_output("drillbook.start(", "DRY")
    lab.shots.take(lab.page, "run-open")
    refused = drillbook(server, "run", "postgres-failover", "--env", "local", "--dry-run", "--skip-preflight")
    assert refused.code == 2 and "local" in refused.stderr and OPERATOR in refused.stderr, refused.output
    assert not [r for r in records(server) if r.get("incident") == "INC-KILL"]

    kernel = lab.kernel_id()
    pid = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
               and kernel in (p / "cmdline").read_bytes().decode(errors="replace").replace("\0", " "))
    os.kill(pid, signal.SIGKILL)
    wait_until("the kernel process to be gone", lambda: not Path(f"/proc/{pid}").exists() or
               "Z" in (Path(f"/proc/{pid}/stat").read_text().split()[2]))
    status = drillbook(server, "status")
    assert "as aborted" in status.stderr, status.output
    (record,) = [r for r in records(server) if r.get("incident") == "INC-KILL"]
    assert record["status"] == "aborted" and record["mode"] == "interactive"
    lab.shots.take(lab.page, "after-kill")
