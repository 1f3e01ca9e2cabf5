"""The network and disk drills through the real `drillbook run` against the session's lab: live
three times in a row, dry-run (touches nothing), stopped by a stop condition (a runbook made to
stall), and interrupted mid-fault (SIGINT) — each leaving the lab healed.

Real PostgreSQL pair, real nftables, real papermill; every assertion reads what the run archived
(record.json, the executed runbook) or the lab and the ruleset themselves.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from conftest import DRILLBOOK, REPO, CliResult, cli
from drillbook.faults.network import PREFIX, project_tag
from drillbook.lab import control
from drillbook.lab.sshd import sshd_binary
from drillbook.lab.state import NODES
from labsupport import LabProject, lab_project  # noqa: F401

pytestmark = pytest.mark.integration
NOTEBOOKS = {"runbooks": ["postgres-replication-lag", "postgres-disk-full", "postgres-failover"],
             "notebooks/drills": ["partition-standby", "disk-full", "partition-primary"]}


def require_root_and_nft() -> None:
    why = "the network drills need root" if os.geteuid() != 0 else (
        "nft is missing: apt-get install -y nftables" if shutil.which("nft") is None else None)
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def lab(lab_project: LabProject) -> LabProject:  # noqa: F811
    require_root_and_nft()
    for folder, names in NOTEBOOKS.items():
        for name in names:
            shutil.copy(REPO / folder / f"{name}.ipynb", lab_project.root / folder / f"{name}.ipynb")
    return lab_project


def runbook_running() -> bool:
    """Has a drill's runbook (a child run) journalled its start? Run folders live under DRILLBOOK_HOME."""
    return any(Path(os.environ["DRILLBOOK_HOME"]).glob("runs/run-*/child-*/journal.json"))


def extra() -> list[str]:
    return [] if sshd_binary() else ["--skip-preflight"]  # the test lab lists lab-ssh as a required host


def bundles(archive: Path) -> set[Path]:
    return set((archive / "runs").glob("*")) if (archive / "runs").exists() else set()


def run(project: LabProject, archive: Path, drill: str, *args: str) -> tuple[CliResult, dict, Path]:
    before = bundles(archive)
    result = cli(project.root, "run", drill, "--env", "local", *args, *extra(),
                 env={"DRILLBOOK_ARCHIVE": str(archive)}, timeout=600)
    return result, *only_new_bundle(archive, before, result.output)


def only_new_bundle(archive: Path, before: set[Path], output: str) -> tuple[dict, Path]:
    added = bundles(archive) - before
    assert len(added) == 1, f"expected one new bundle, found {len(added)}:\n{output}"
    bundle = added.pop()
    return json.loads((bundle / "record.json").read_text()), bundle


def our_tables(project: LabProject) -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return [line.split()[-1] for line in out.splitlines() if f"{PREFIX}{project_tag(project.root)}_" in line]


def measures(record: dict) -> dict[str, dict]:
    return {m["name"]: m for m in record["measures"]}


def checks(record: dict) -> dict[str, dict]:
    return {c["name"]: c for c in record["checks"]}


def scratch_mounts(project: LabProject) -> list[str]:
    scratch = str((project.paths.data / "scratch").resolve())
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if scratch in line]


def fill_files(project: LabProject) -> list[Path]:
    return sorted((project.paths.data / "scratch").glob("*/.drillbook-fill-*"))


def assert_healed(project: LabProject) -> None:
    """`lab status` healthy, no table of ours, no mount, fill file or scratch copy left, no stopped postgres."""
    report = control.status(project.root)
    assert report.healthy, [(n.name, n.role, n.streaming, n.fenced) for n in report.nodes]
    assert our_tables(project) == [] and scratch_mounts(project) == [] and fill_files(project) == []
    assert sorted(p.name for p in (project.paths.data / "scratch").glob("*")) == []
    for name in NODES:
        pid = (project.paths.node(name) / "postmaster.pid").read_text().split()[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "T", f"{name}'s postmaster is stopped"


def roles(project: LabProject) -> dict[str, str]:
    with project.postgres() as pg:
        return pg.replication.roles()


# ----------------------------------------------------------------------------- partition (a)
def test_partition_standby_three_times_in_a_row(lab: LabProject, tmp_path: Path) -> None:
    for attempt in range(3):
        result, record, bundle = run(lab, tmp_path / "archive", "partition-standby", "--approve", "fault")
        assert result.code == 0 and record["status"] == "passed", (attempt, record["reason"], result.output)
        found = measures(record)
        assert found["detect_seconds"]["verdict"] == "met" and found["detect_seconds"]["value"] > 0
        assert found["catch_up_seconds"]["verdict"] == "met"
        assert found["failed_probes"]["value"] == 0 and found["writes_acknowledged"]["value"] > 0
        assert found["lag_at_heal_bytes"]["value"] > 0  # the standby really fell behind
        assert checks(record)["the runbook named a broken link"]["passed"]
        step = {s["title"]: s for s in record["steps"]}
        assert step[f"Partition {record_standby(record)} from the primary {record_primary(record)}"]["status"] == "passed"
        assert [c["status"] for c in record["cleanups"]] == ["passed"] * len(record["cleanups"])
        nb = nbformat.read(str(bundle / "attachments" / "postgres-replication-lag.ipynb"), as_version=4)
        assert any("link silent" in str(cell.get("outputs")) for cell in nb.cells if cell.cell_type == "code")
        assert_healed(lab)


def record_standby(record: dict) -> str:
    return next(c["name"].split()[0] for c in record["checks"] if c["name"].endswith("caught up with the primary"))


def record_primary(record: dict) -> str:
    found = next(c for c in record["checks"] if c["name"] == "exactly one primary")["detail"]
    return next(part.split("=")[0] for part in found.split(", ") if part.endswith("=primary"))


def test_partition_standby_dry_run_touches_nothing(lab: LabProject, tmp_path: Path) -> None:
    pids = {n: (lab.paths.node(n) / "postmaster.pid").read_text() for n in NODES}
    before = roles(lab)
    result, record, _ = run(lab, tmp_path / "archive", "partition-standby", "--dry-run")
    assert result.code == 0 and record["status"] == "passed" and record["dry_run"], record["reason"]
    fault = next(s for s in record["steps"] if s["title"].startswith("Partition "))
    assert fault["status"] == "dry-run" and "nftables table" in fault["detail"]
    assert "detect_seconds" not in measures(record)
    assert roles(lab) == before and our_tables(lab) == []
    assert {n: (lab.paths.node(n) / "postmaster.pid").read_text() for n in NODES} == pids


def test_a_stop_condition_heals_and_fails_a_drill_whose_runbook_stalls(lab: LabProject, tmp_path: Path) -> None:
    runbook = lab.root / "runbooks" / "postgres-replication-lag.ipynb"
    nb = nbformat.read(str(runbook), as_version=4)
    stall = next(i for i, c in enumerate(nb.cells) if c.source.startswith("# Name the cause"))
    nb.cells[stall].source = "import time\ntime.sleep(600)  # the runbook hangs: only a stop condition ends it"
    nbformat.write(nb, str(runbook))
    try:
        started = time.monotonic()
        result, record, _ = run(lab, tmp_path / "archive", "partition-standby", "--approve", "fault",
                                "-p", "max_lag_bytes=65536")
        took = time.monotonic() - started
    finally:
        shutil.copy(REPO / "runbooks" / "postgres-replication-lag.ipynb", runbook)
    assert result.code == 1 and record["status"] == "failed", (record["status"], record["reason"])
    assert record["reason"].startswith("stop condition crossed: replication lag of")
    assert not checks(record)["no stop condition crossed"]["passed"]
    titles = [s["title"] for s in record["steps"]]
    assert "Heal the partition" not in titles  # the remaining steps were skipped
    assert "catch_up_seconds" not in measures(record)
    heal = next(c for c in record["cleanups"] if c["title"].startswith("heal: "))
    assert heal["status"] == "passed"
    assert took < 300  # ended by the condition, not by the runbook's 600 s sleep
    assert_healed(lab)


@pytest.mark.parametrize("drill, gates, in_fault", [
    ("partition-standby", ["fault"], our_tables),
    ("disk-full", ["fault", "free"], fill_files),
    ("partition-primary", ["fault", "promote"], our_tables),
])
def test_sigint_mid_fault_leaves_the_lab_healed(lab: LabProject, tmp_path: Path, drill: str, gates: list[str],
                                                in_fault) -> None:
    archive = tmp_path / "archive"
    before = bundles(archive)
    approve = [arg for gate in gates for arg in ("--approve", gate)]
    proc = subprocess.Popen([str(DRILLBOOK), "run", drill, "--env", "local", *approve, *extra()],
                            cwd=lab.root, env={**os.environ, "DRILLBOOK_ARCHIVE": str(archive)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Mid-fault, once the runbook's kernel runs its cells: the drill's kernel is then busy in a cell
        # (an idle kernel ignores SIGINT, so an interrupt between cells would only land later).
        deadline = time.monotonic() + 180
        while not (in_fault(lab) and runbook_running()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_fault(lab) and runbook_running(), "the fault never began"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    record, _ = only_new_bundle(archive, before, output)
    assert proc.returncode == 1 and record["status"] == "aborted", (record["status"], record["reason"])
    heal = next(c for c in record["cleanups"] if c["title"].startswith("heal: "))
    assert heal["status"] == "passed"
    assert_healed(lab)


# ----------------------------------------------------------------------------- disk full
def test_disk_full_three_times_in_a_row(lab: LabProject, tmp_path: Path) -> None:
    for attempt in range(3):
        result, record, bundle = run(lab, tmp_path / "archive", "disk-full", "--approve", "fault", "--approve", "free")
        assert result.code == 0 and record["status"] == "passed", (attempt, record["reason"], result.output)
        found = measures(record)
        assert found["writes_refused"]["value"] > 0  # the full filesystem really stopped writes
        assert found["writes_back_seconds"]["verdict"] == "met"
        assert checks(record)["the runbook removed the file that filled the WAL filesystem"]["passed"]
        assert checks(record)["no inactive replication slot is left"]["passed"]
        child = json.loads((bundle / "attachments" / "postgres-disk-full.journal.json").read_text())
        steps = {st["title"].split(" diskfull-")[0]: st for st in child["steps"]}
        assert "No space left on device" in steps["Read the server log for a full disk"]["detail"]
        assert "100.0 % used" in steps["Which filesystem is full"]["detail"]
        assert steps["Remove the files that are not PostgreSQL's"]["detail"].startswith("removed 1 file(s): ")
        assert [c["status"] for c in record["cleanups"]] == ["passed"] * len(record["cleanups"])
        assert_healed(lab)


def test_disk_full_dry_run_touches_nothing(lab: LabProject, tmp_path: Path) -> None:
    pids = {n: (lab.paths.node(n) / "postmaster.pid").read_text() for n in NODES}
    result, record, _ = run(lab, tmp_path / "archive", "disk-full", "--dry-run")
    assert result.code == 0 and record["status"] == "passed" and record["dry_run"], record["reason"]
    planned = [s for s in record["steps"] if s["status"] == "dry-run"]
    assert any("mount a tmpfs" in s["detail"] for s in planned) and any("fallocate" in s["detail"] for s in planned)
    assert scratch_mounts(lab) == [] and list((lab.paths.data / "scratch").glob("*")) == []
    assert {n: (lab.paths.node(n) / "postmaster.pid").read_text() for n in NODES} == pids


# ----------------------------------------------------------------------------- partition (b): split brain
def test_partition_primary_three_times_in_a_row(lab: LabProject, tmp_path: Path) -> None:
    for attempt in range(3):
        before = roles(lab)
        old = next(n for n, r in before.items() if r == "primary")
        result, record, _ = run(lab, tmp_path / "archive", "partition-primary", "--approve", "fault", "--approve", "promote")
        assert result.code == 0 and record["status"] == "passed", (attempt, record["reason"], result.output)
        found, seen = measures(record), checks(record)
        assert found["rto_seconds"]["verdict"] == "met" and found["rpo_seconds"]["verdict"] == "met"
        assert found["isolated_writes"]["value"] == 0 and found["isolated_writes"]["verdict"] == "met"
        assert seen["never two nodes acknowledging writes"]["passed"]
        assert seen[f"{old} refuses writes after the partition heals"]["passed"]
        assert seen[f"{old} is fenced"]["passed"]
        assert roles(lab)[old] == "standby"  # rebuilt; the other node is the primary now
        assert_healed(lab)


def test_partition_primary_dry_run_touches_nothing(lab: LabProject, tmp_path: Path) -> None:
    pids = {n: (lab.paths.node(n) / "postmaster.pid").read_text() for n in NODES}
    before = roles(lab)
    result, record, _ = run(lab, tmp_path / "archive", "partition-primary", "--dry-run")
    assert result.code == 0 and record["status"] == "passed" and record["dry_run"], record["reason"]
    fault = next(s for s in record["steps"] if s["title"].startswith("Cut the primary"))
    assert fault["status"] == "dry-run" and "drop every TCP packet" in fault["detail"]
    assert roles(lab) == before and our_tables(lab) == []
    assert {n: (lab.paths.node(n) / "postmaster.pid").read_text() for n in NODES} == pids
