"""The point-in-time-restore and cold-start drills and their runbooks: pure parts, then for real.

Pure parts first (choosing the base backup and the node with the most WAL, reading pg_waldump and
backup labels, the archive command run by a real sh), then each drill through the real
`drillbook run` against the session's lab: three times in a row, dry-run (touches nothing), the
cold start interrupted with SIGINT right after its fault, which its cleanup must heal, and the
point-in-time restore interrupted while its runbook restores, which must leave no scratch copy.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import DRILLBOOK
from drillbook.journal import parse_iso
from drillbook.procedures import coldstart, pitr
from drillbook.procedures.coldstart import ColdStartRefused, WalFacts
from drillbook.targets.postgres import pitr as archive
from drillbook.targets.postgres.pitr import KeptBackup
from labsupport import LabProject, lab_project  # noqa: F401
from test_drills import assert_healthy, checks, drills, executed_runbook, lab_state, measures, run  # noqa: F401

APPROVE = {"pitr-restore": ["--approve", "fault"], "cold-start": ["--approve", "fault", "--approve", "start"]}
RUNBOOK = {"pitr-restore": "postgres-point-in-time-restore", "cold-start": "postgres-cold-start"}


# ============================================================================= pure parts
def node(name: str, timeline: int, end: int, standby: bool = False, fenced: bool = False,
         running: str = "down") -> WalFacts:
    return WalFacts(name, running, True, standby, fenced, timeline, end)


def test_cold_start_chooses_the_node_with_the_most_wal_never_a_fenced_one() -> None:
    assert coldstart.choose_primary([node("pg1", 1, 500), node("pg2", 1, 400, standby=True)]) == "pg1"
    assert coldstart.choose_primary([node("pg1", 1, 400), node("pg2", 1, 500, standby=True)]) == "pg2"  # more WAL wins
    assert coldstart.choose_primary([node("pg1", 1, 900), node("pg2", 2, 100, standby=True)]) == "pg2"  # newer timeline
    assert coldstart.choose_primary([node("pg1", 1, 500, standby=True), node("pg2", 1, 500)]) == "pg2"  # tie: no promotion
    assert coldstart.choose_primary([node("pg1", 3, 900, fenced=True), node("pg2", 2, 100, standby=True)]) == "pg2"
    assert coldstart.choose_primary([node("pg1", 1, 1, running="primary"), node("pg2", 1, 9)]) == "pg1"  # one is up


@pytest.mark.parametrize("facts, message", [
    ([node("pg1", 1, 1, running="primary"), node("pg2", 2, 1, running="primary")], "split brain"),
    ([node("pg1", 1, 1, fenced=True), WalFacts("pg2", "down", False, False, False, 0, 0)], "no unfenced node has data"),
])
def test_cold_start_refuses_what_it_cannot_do_safely(facts: list[WalFacts], message: str) -> None:
    with pytest.raises(ColdStartRefused, match=message) as caught:
        coldstart.choose_primary(facts)
    assert caught.value.hint


def test_the_end_of_wal_is_where_pg_waldump_stopped_and_a_timeline_starts_at_its_switch_point() -> None:
    out = "pg_waldump: error: error in WAL record at 0/80165C0: invalid record length at 0/80165E8: wanted 24, got 0"
    assert coldstart.wal_end(out, 5) == 0x80165E8
    assert coldstart.wal_end('pg_waldump: error: could not find file "000000010000000000000009"', 77) == 77
    assert coldstart.switch_point("1\t0/3000148\tno recovery target specified\n2\t0/5000000\tbefore x\n") == 0x5000000
    assert coldstart.switch_point("") == 0


def test_a_backup_label_is_read_and_the_newest_backup_before_the_target_chosen() -> None:
    label = ("START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000060\n"
             "START TIME: 2026-12-01 11:13:34 UTC\nLABEL: pitr-a\nSTART TIMELINE: 1\n")
    first = archive.parse_backup_label("/b/a", label)
    assert first == KeptBackup("/b/a", "pitr-a", 1, 0x4000028, "000000010000000000000004", "2026-12-01 11:13:34 UTC")
    assert archive.parse_backup_label("/b/x", "not a label") is None
    second = KeptBackup("/b/b", "pitr-b", 2, 0x9000028, "000000020000000000000009", "2026-12-01 12:00:00 UTC")
    assert pitr.choose_backup([first, second], "2026-12-01 11:30:00+00", "") == first
    assert pitr.choose_backup([first, second], "2026-12-01T12:00:01+00:00", "") == second
    assert pitr.choose_backup([first, second], "", "0/5000000") == first
    with pytest.raises(pitr.NoBackupForTarget, match="no base backup starts before the target"):
        pitr.choose_backup([first, second], "2026-12-01 10:00:00+00", "")


def test_recovery_needs_exactly_one_target_and_never_archives_into_the_services_archive() -> None:
    conf = archive.recovery_conf("/a", "2026-12-01 11:30:00+00", "")
    assert "recovery_target_time = '2026-12-01 11:30:00+00'" in conf and "archive_mode = off" in conf
    assert "recovery_target_inclusive = off" in conf and "recovery_target_action = 'pause'" in conf
    for both in (("", ""), ("2026-12-01 11:30:00+00", "0/1")):
        with pytest.raises(Exception, match="exactly one recovery target"):
            archive.recovery_conf("/a", *both)
    ok, _ = pitr.stopped_before(archive.Replayed("0/5", 1, "2026-12-01 11:29:59+00"), "2026-12-01 11:30:00+00", "")
    late, detail = pitr.stopped_before(archive.Replayed("0/5", 1, "2026-12-01 11:30:01+00"), "2026-12-01 11:30:00+00", "")
    assert ok and not late and "target 2026-12-01 11:30:00+00" in detail


def test_archive_command_keeps_an_identical_copy_and_refuses_to_overwrite_history(tmp_path: Path) -> None:
    target, wal = tmp_path / "archive dir", tmp_path / "pg_wal"
    target.mkdir()
    wal.mkdir()
    (wal / "000000010000000000000001").write_bytes(b"segment one")

    def archive_it(name: str) -> int:  # as PostgreSQL runs it: %p and %f substituted, through sh
        command = archive.archive_command(str(target)).replace("%p", str(wal / name)).replace("%f", name)
        return subprocess.run(["sh", "-c", command]).returncode

    assert archive_it("000000010000000000000001") == 0
    assert (target / "000000010000000000000001").read_bytes() == b"segment one"
    assert archive_it("000000010000000000000001") == 0  # a retry after a crash: already there, same bytes
    (wal / "000000010000000000000001").write_bytes(b"another history")
    assert archive_it("000000010000000000000001") != 0  # never overwritten
    assert (target / "000000010000000000000001").read_bytes() == b"segment one"
    assert sorted(p.name for p in target.iterdir()) == ["000000010000000000000001"]  # no .tmp left


def test_the_restored_copy_is_judged_by_what_was_acknowledged_before_the_target() -> None:
    from types import SimpleNamespace

    from drillbook.measure.compute import Ack

    seen: dict[str, tuple[bool, str]] = {}
    drill = SimpleNamespace(check=lambda name, ok, detail: seen.update({name: (ok, detail)}),
                            measure=lambda name, value, **kw: seen.update({name: (value, kw.get("objective"))}))
    # Writes 1-4 acknowledged before the target (t=10), 5 in flight across it, 6-7 begun after it.
    acks = [Ack(1, 1.0, "n"), Ack(2, 2.0, "n"), Ack(3, 3.0, "n"), Ack(4, 4.0, "n"), Ack(5, 10.05, "n"),
            Ack(6, 12.0, "n"), Ack(7, 13.0, "n")]
    load = SimpleNamespace(acks=acks, writer=SimpleNamespace(latencies=[0.01] * 4 + [0.1, 0.01, 0.01]))
    change = pitr.BadChange("2026-12-01 11:30:00+00", before=10.0, after=10.01, deleted=(2, 4, 6))
    pitr.verify_restored(drill, load, change, present={1, 2, 3, 4})
    assert seen["the rows the bad change deleted are back"][0]  # 6 was written after the target: rightly absent
    assert seen["every write acknowledged before the target is present"][0]
    assert seen["no write begun after the target is present"][0] and seen["rpo_writes"][0] == 0
    pitr.verify_restored(drill, load, change, present={1, 3, 4, 6})
    assert not seen["the rows the bad change deleted are back"][0]
    assert not seen["every write acknowledged before the target is present"][0] and seen["rpo_writes"][0] == 1
    assert not seen["no write begun after the target is present"][0]  # 6 leaked into the copy
    assert seen["rpo_seconds"] == (8.0, "rpo_seconds")  # the missing write 2 was acknowledged 8 s before the target


@pytest.mark.parametrize("name", ["../../pg1", "a/b", "", ".hidden", "x" * 80, "a b", "pitr;rm"])
def test_a_scratch_name_that_is_a_path_is_refused_before_anything_is_removed(name: str) -> None:
    from types import SimpleNamespace

    pg = SimpleNamespace(context=SimpleNamespace(data_dir=lambda node: "/srv/pg/data/pg1"))
    with pytest.raises(pitr.DrillbookError, match="not a plain name") as caught:
        pitr.scratch_dir(pg, "pg1", name)
    assert caught.value.hint
    assert pitr.scratch_dir(pg, "pg1", "pitr-1a2b") == "/srv/pg/data/scratch/pitr-1a2b"


def test_a_target_lsn_that_is_not_one_is_refused_with_the_format() -> None:
    with pytest.raises(pitr.DrillbookError, match="is not a WAL position"):
        pitr.choose_backup([], "", "0/5000060; DROP")


class FakeRun:
    """Records what target_given asks of a drill (the real require stops the run: here it raises)."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run, self.skipped = dry_run, []

    def not_applicable(self, title: str, reason: str) -> None:
        self.skipped.append((title, reason))

    def require(self, name: str, ok: bool, detail: str = "") -> None:
        if not ok:
            raise AssertionError(f"{name}: {detail}")


def test_without_a_target_a_dry_run_only_diagnoses_and_a_live_run_refuses() -> None:
    dry = FakeRun(dry_run=True)
    assert pitr.target_given(dry, "", "") is False
    assert dry.skipped == [("Plan the restore", pitr.NO_TARGET)] and "no recovery target given" in pitr.NO_TARGET
    assert pitr.target_given(FakeRun(dry_run=True), "2026-12-01 11:30:00+00", "") is True
    for dry_run, both in ((False, ("", "")), (True, ("2026-12-01 11:30:00+00", "0/1")), (False, ("x", "0/1"))):
        with pytest.raises(AssertionError, match="one recovery target is given"):
            pitr.target_given(FakeRun(dry_run), *both)


def test_the_target_range_starts_at_the_oldest_backup_and_names_missing_wal() -> None:
    first = KeptBackup("/b/a", "pitr-a", 1, 0x4000028, "000000010000000000000004", "2026-12-01 11:13:34 UTC")
    at = pitr.Archiver("000000010000000000000006", "2026-12-01 12:00:00+00", 0, None, "2026-12-01 12:30:00+00")
    wal = ["000000010000000000000004", "000000010000000000000006", "000000010000000000000005", "base"]
    text = pitr.describe_range([first], wal, at)
    assert "3 WAL segment(s) archived (000000010000000000000004 … 000000010000000000000006)" in text
    assert "after 2026-12-01 11:13:34 UTC" in text and "before 2026-12-01 12:30:00+00" in text and "not in the archive" not in text
    assert "is not in the archive" in pitr.describe_range([first], wal[1:], at)
    failing = pitr.Archiver(None, None, 3, "000000010000000000000007", "now")
    assert "Nothing can be restored" in pitr.describe_range([], [], failing)
    assert "no WAL segment archived" in pitr.describe_range([], [], failing) and "failed 3 time(s)" in pitr.describe_range([], [], failing)


# ============================================================================= against the lab
def run_drill(project: LabProject, tmp_path: Path, drill: str, *args: str) -> tuple[dict, Path]:
    result, record, bundle = run(project, tmp_path, drill, *args)
    assert result.code == 0, result.output
    assert record["status"] == "passed" and record["reason"] is None, [c for c in record["checks"] if not c["passed"]]
    assert [c["status"] for c in record["cleanups"]] == ["passed"] * len(record["cleanups"])
    return record, bundle


def check_pitr(record: dict, bundle: Path) -> None:
    m, c = measures(record), checks(record)
    for name in ("the rows the bad change deleted are back", "every write acknowledged before the target is present",
                 "no write begun after the target is present",
                 "postgres-point-in-time-restore: replay paused just before the target",
                 "no backup or scratch instance left behind"):
        assert c[name]["passed"], (name, c[name])
    assert int(c["the rows the bad change deleted are back"]["detail"].split()[0]) > 0
    assert m["rpo_writes"]["value"] == 0 and m["rpo_seconds"]["verdict"] == "met"
    assert m["restore_seconds"]["objective"] == "rto_seconds" and m["restore_seconds"]["verdict"] == "met"
    assert m["wal_replayed_bytes"]["value"] > 0
    assert m["probe_latency_p95_ms_before"]["value"] > 0 and m["write_latency_p99_ms_during"]["value"] > 0
    executed_runbook(bundle, "postgres-point-in-time-restore")


def check_cold_start(record: dict, bundle: Path, primary: str) -> None:
    m, c = measures(record), checks(record)
    assert m["rto_seconds"]["verdict"] == "met" and m["rto_seconds"]["value"] > 0
    assert m["lost_writes"]["value"] == 0 and m["lost_writes"]["verdict"] == "met"
    assert m["failed_probes"]["value"] >= 1  # every node really went away
    for name in (f"postgres-cold-start: {primary} is the only primary", "postgres-cold-start: every other node streams from it",
                 "pair healthy again: one primary, the other nodes streaming standbys"):
        assert c[name]["passed"], name
    fault = next(s for s in record["steps"] if s["title"].startswith("Power loss"))
    assert fault["status"] == "passed"
    # The runbook was started before the fault and held at its first step: its kernel ran its
    # first cells before the fault, and its own time (its journal) starts after it.
    nb = executed_runbook(bundle, "postgres-cold-start")
    first_cell = parse_iso(nb.cells[1].metadata["papermill"]["start_time"].replace("+00:00", "Z"))
    child = json.loads((bundle / "attachments" / "postgres-cold-start.journal.json").read_text())
    assert first_cell < parse_iso(fault["started_at"]) <= parse_iso(fault["ended_at"]) <= parse_iso(child["started_at"])


@pytest.mark.integration
def test_pitr_restore_passes_three_times_in_a_row(drills: LabProject, tmp_path: Path) -> None:  # noqa: F811
    for attempt in range(3):
        assert_healthy(drills)
        before = lab_state(drills)
        record, bundle = run_drill(drills, tmp_path, "pitr-restore", *APPROVE["pitr-restore"])
        check_pitr(record, bundle)
        after = lab_state(drills)
        assert after["leftovers"] == [] and after["writes"] == before["writes"], attempt  # the drill cleaned up
        assert after["nodes"] == before["nodes"] and after["primary_started"] == before["primary_started"]
    assert (drills.paths.root / "wal-archive" / "base").is_dir()


@pytest.mark.integration
def test_cold_start_passes_three_times_in_a_row(drills: LabProject, tmp_path: Path) -> None:  # noqa: F811
    for attempt in range(3):
        assert_healthy(drills)
        before = lab_state(drills)
        primary = next(n for n, (role, *_rest) in before["nodes"].items() if role == "primary")
        record, bundle = run_drill(drills, tmp_path, "cold-start", *APPROVE["cold-start"])
        # Both nodes held the same WAL (the standby was caught up): the former primary needs no promotion.
        check_cold_start(record, bundle, primary)
        after = lab_state(drills)
        assert after["nodes"] == before["nodes"], attempt  # same roles, same timeline: nothing was promoted
        assert after["primary_started"] != before["primary_started"]  # but it really went down and came back
        assert after["writes"] == before["writes"] and after["leftovers"] == []
    assert_healthy(drills)


@pytest.mark.integration
@pytest.mark.parametrize("drill", ["pitr-restore", "cold-start"])
def test_new_drill_dry_run_passes_and_changes_nothing(drills: LabProject, tmp_path: Path, drill: str) -> None:  # noqa: F811
    assert_healthy(drills)
    before = lab_state(drills)
    kept = sorted(p.name for p in (drills.paths.root / "wal-archive").iterdir())
    result, record, bundle = run(drills, tmp_path, drill, "--dry-run", *APPROVE[drill])
    assert result.code == 0, result.output
    assert record["status"] == "passed" and record["dry_run"] is True
    assert lab_state(drills) == before
    assert sorted(p.name for p in (drills.paths.root / "wal-archive").iterdir()) == kept  # no WAL switch, no backup
    mutating = [s for s in record["steps"] if s["mutating"]]
    assert mutating and all(s["status"] == "dry-run" and s["detail"].startswith("would: ") for s in mutating)
    assert record["measures"] == []
    nb = executed_runbook(bundle, RUNBOOK[drill])
    assert nb.metadata["papermill"]["parameters"]["dry_run"] is True
    assert "Nothing was changed" in json.dumps([c.get("outputs") for c in nb.cells])


def journal_of_running(home: Path) -> dict | None:
    for path in (home / "runs").glob("run-*/journal.json"):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced: read it on the next poll
            return None
    return None


def interrupt_when(project: LabProject, tmp_path: Path, drill: str, ready: Callable[[Path], bool],
                   what: str) -> tuple[dict, dict[str, str], str]:
    """Run ``drill`` with `drillbook run`, SIGINT it as soon as ``ready(DRILLBOOK_HOME)``: (its record,
    cleanup title → status, its output), once it exited 1, ABORTED."""
    home = Path(os.environ["DRILLBOOK_HOME"])
    env = {**os.environ, "DRILLBOOK_ARCHIVE": str(tmp_path / "archive")}
    proc = subprocess.Popen([str(DRILLBOOK), "run", drill, "--env", "local", *APPROVE[drill]],
                            cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready(home):  # poll the journals, then interrupt at once
            assert proc.poll() is None and time.monotonic() < deadline, f"the drill never reached {what}"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and f"ABORTED {drill} on local" in out, out
    record = json.loads(next((tmp_path / "archive" / "runs").glob("*/record.json")).read_text())
    assert record["status"] == "aborted"
    return record, {c["title"]: c["status"] for c in record["cleanups"]}, out


def fault_passed(home: Path) -> bool:
    data = journal_of_running(home) or {}
    return any(s["title"].startswith("Power loss") and s["status"] == "passed" for s in data.get("steps", []))


@pytest.mark.integration
def test_cold_start_interrupted_right_after_its_fault_heals_the_lab(drills: LabProject, tmp_path: Path) -> None:  # noqa: F811
    assert_healthy(drills)
    record, cleanups, out = interrupt_when(drills, tmp_path, "cold-start", fault_passed, "its fault")
    assert cleanups.get("start every node again: the one with the most WAL as the primary") == "passed", (cleanups, out)
    assert all(status == "passed" for status in cleanups.values()), cleanups
    order = [c["title"] for c in record["cleanups"]]  # the released runbook is stopped before the nodes heal
    assert order.index("stop runbook postgres-cold-start if it is still running") < \
        order.index("start every node again: the one with the most WAL as the primary")
    assert_healthy(drills)  # healed by the drill's own cleanup: no `lab up`
    with drills.postgres() as pg:
        assert sorted(pg.replication.roles().values()) == ["primary", "standby"]


def runbook_restoring(home: Path) -> bool:
    """Does the drill's runbook (a child run, its folder under the drill's) run its restore step now?"""
    for path in (home / "runs").glob("run-*/child-*/journal.json"):
        try:
            steps = json.loads(path.read_text()).get("steps", [])
        except (OSError, ValueError):  # being replaced: read it on the next poll
            return False
        return any(s.get("status") == "running" and s["title"].startswith("Restore ") for s in steps)
    return False


@pytest.mark.integration
def test_pitr_restore_interrupted_while_its_runbook_restores_leaves_nothing_behind(
        drills: LabProject, tmp_path: Path) -> None:  # noqa: F811
    assert_healthy(drills)
    before = lab_state(drills)
    record, cleanups, out = interrupt_when(drills, tmp_path, "pitr-restore", runbook_restoring, "its restore")
    assert any(s["title"].startswith("Make the bad change") and s["status"] == "passed" for s in record["steps"])
    assert cleanups.get("remove the scratch instance") == "passed", (cleanups, out)
    assert all(status == "passed" for status in cleanups.values()), cleanups
    after = lab_state(drills)
    assert after["leftovers"] == [] and after["writes"] == before["writes"]  # no scratch copy, the drill's rows gone
    assert after["nodes"] == before["nodes"] and after["primary_started"] == before["primary_started"]


@pytest.mark.integration
def test_a_runbook_held_before_a_fault_that_never_comes_is_stopped_and_kept_as_evidence(
        drills: LabProject, tmp_path: Path) -> None:  # noqa: F811
    assert_healthy(drills)
    before = lab_state(drills)
    result, record, bundle = run(drills, tmp_path, "failover", "--approve", "promote")  # the fault's gate is not approved
    assert result.code == 1 and record["status"] == "error" and "GateNotApproved" in record["reason"]
    cleanups = {c["title"]: c["status"] for c in record["cleanups"]}
    assert cleanups["stop runbook postgres-failover if it is still running"] == "passed"
    assert record["attachments"] == ["attachments/postgres-failover.ipynb"]  # the held runbook's copy is evidence
    child = json.loads((bundle / "attachments" / "postgres-failover.journal.json").read_text())
    assert child["status"] == "aborted" and child["steps"] == []  # stopped while held: it never took a step
    assert lab_state(drills) == before
