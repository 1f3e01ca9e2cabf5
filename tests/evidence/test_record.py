"""The run record's one schema, and the one verdict: a real run's journal and record, written and read back."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
from conftest import Project
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drillbook import journal
from drillbook.config import environments
from drillbook.config.secrets import Redactor
from drillbook.drill import Drill
from drillbook.evidence import ledger, record
from drillbook.evidence.archive import load_record, record_run
from drillbook.evidence.record import Check, Cleanup, Measure, verdict
from drillbook.evidence.status import FROM_LEDGER
from drillbook.evidence.verify import verify_archive


def _keys_fit(entry: dict[str, Any], schema: type, what: str) -> None:
    """Every key the schema requires is there, and nothing it does not declare."""
    required, allowed = schema.__required_keys__, schema.__required_keys__ | schema.__optional_keys__
    assert required <= set(entry), f"{what} lacks {sorted(required - set(entry))}"
    assert set(entry) <= allowed, f"{what} holds undeclared {sorted(set(entry) - allowed)}"


def _run(project: Project, run_dir: Path) -> Drill:
    """A run through the drill API, journalled to ``run_dir``: every kind of entry the journal holds."""
    env = environments.load_environment("local", project.root)
    drill = Drill(env, dry_run=False, approve=["promote"], run_id="r-schema", change=None, run_dir=run_dir,
                  project=project.root)
    drill.step("Look", lambda: "fine")
    drill.step("Promote", lambda: None, mutating=True, gate="promote")
    drill.not_applicable("Over SSH", "no SSH host")
    drill.approve_gate("later", how="approved in advance by the test")
    drill.check("writes accepted", True, "1 row")
    drill.measure("rto_seconds", 12.5, objective="rto_seconds")
    drill.measure("rows", 3, unit="rows")
    drill.cleanup(lambda: None, "Fail back")
    drill.attach("notes.txt", "a note")
    try:
        drill.step("Break", lambda: 1 / 0)
    except ZeroDivisionError as exc:
        drill.fail(exc)  # what the cell hook does: cleanups run, the error is journalled
    return drill


def test_a_real_run_record_round_trips_through_the_schema(project: Project, tmp_path: Path) -> None:
    notebook = project.add_notebook("passes.ipynb")
    run_dir = tmp_path / "run"
    _run(project, run_dir)
    kernel_journal = journal.read_journal(run_dir)
    assert kernel_journal is not None
    _keys_fit(kernel_journal, record.Journal, "the journal")
    assert "error" in kernel_journal and journal.SECRET_REFS in record.Journal.__required_keys__
    for field, schema in (("steps", record.Step), ("checks", record.Check), ("measures", record.Measure),
                          ("cleanups", record.Cleanup), ("gates", record.Gate)):
        assert kernel_journal[field], f"the run journalled no {field}"
        for entry in kernel_journal[field]:
            _keys_fit(entry, schema, f"a journalled {field} entry")
    _keys_fit(kernel_journal["error"], record.Error, "the journalled error")

    env = environments.load_environment("local", project.root)
    base = record.base_record(run_id="r-schema", drill="passes", kind="drill", title="Passes", notebook="passes.ipynb",
                              env=env, parameters={"env": "local"}, dry_run=False, approve=["promote"], change=None,
                              controls=["C-1"], source=record.source_info(notebook, project.root), operator="t@h")
    _keys_fit(base, record.Record, "the base record")
    _keys_fit(base["source"], record.Source, "the source")
    done = record.complete_record(base, status="error", reason="ZeroDivisionError: division by zero", seconds=1.0,
                                  kernel_journal=kernel_journal, failing_cell=None, results=None)
    archive = tmp_path / "archive"
    record_run(archive, Ed25519PrivateKey.generate(), done, Redactor(), attachments=run_dir / "attachments")
    back = load_record(archive, "r-schema")
    assert back == json.loads(json.dumps(done, default=str))  # nothing lost or renamed on the way
    _keys_fit(back, record.Record, "the archived record")
    assert back["operator"] == kernel_journal["operator"] and back["error"] == kernel_journal["error"]
    for field in record.JOURNAL_FIELDS:  # "note" only when the run was closed at kernel exit
        assert back.get(field) == kernel_journal.get(field)  # type: ignore[misc]
    assert verify_archive(archive, list((archive / "keys").glob("*.pem"))).ok  # no project: no trust file
    assert set(FROM_LEDGER) <= ledger.RunFields.__required_keys__ | ledger.RunFields.__optional_keys__
    assert set(ledger.read_entries(archive)[0]) >= set(FROM_LEDGER)


def test_journal_fields_are_declared_by_both_the_journal_and_the_record() -> None:
    journal_keys = record.Journal.__required_keys__ | record.Journal.__optional_keys__
    record_keys = record.Record.__required_keys__ | record.Record.__optional_keys__
    assert set(record.JOURNAL_FIELDS) <= journal_keys & record_keys
    assert get_args(record.Status) == journal.STATUSES


def _check(name: str, passed: bool) -> Check:
    return {"name": name, "passed": passed, "detail": "", "at": "2026-01-01T00:00:00.000Z"}


def _measure(name: str, verdict_: str) -> Measure:
    return {"name": name, "value": 1.0, "unit": "s", "objective": "rto_seconds", "objective_value": 2.0,
            "better": "lower", "verdict": verdict_, "detail": "", "at": "2026-01-01T00:00:00.000Z"}


def _cleanup(title: str, status: str) -> Cleanup:
    return {"title": title, "started_at": "t0", "status": status, "ended_at": "t1"}


@pytest.mark.parametrize(("checks", "measures", "cleanups", "expected"), [
    ([_check("a", True)], [_measure("rto", "met"), _measure("n", "recorded")], [_cleanup("c", "passed")],
     ("passed", None)),
    ([], [], [], ("passed", None)),
    ([_check("a", True), _check("b", False), _check("c", False)], [_measure("rto", "met")], [],
     ("failed", "check failed: b, c")),
    ([_check("a", True)], [_measure("rto", "missed"), _measure("rpo", "no objective")], [],
     ("failed", "objective missed: rto")),
    ([_check("b", False)], [_measure("rto", "missed")], [_cleanup("c", "failed")],
     ("failed", "check failed: b; objective missed: rto")),
    ([_check("a", True)], [], [_cleanup("c", "failed"), _cleanup("d", "refused"), _cleanup("e", "failed")],
     ("error", "cleanup failed: c, e")),
])
def test_verdict(checks: list[Check], measures: list[Measure], cleanups: list[Cleanup],
                 expected: tuple[str, str | None]) -> None:
    assert verdict(checks, measures, cleanups) == expected


def test_verdict_without_cleanups_and_of_incomplete_entries() -> None:
    assert verdict([_check("a", True)], [_measure("rto", "missed")]) == ("failed", "objective missed: rto")
    # Read back from a journal a kernel left half-written: a check without "passed" did not pass.
    assert verdict([{"name": "x"}], []) == ("failed", "check failed: x")  # type: ignore[typeddict-item]


def test_the_drill_closes_with_the_verdict(project: Project, tmp_path: Path) -> None:
    env = environments.load_environment("local", project.root)
    drill = Drill(env, dry_run=False, approve=[], run_id="r-verdict", change=None, run_dir=tmp_path,
                  project=project.root)
    drill.check("ok", True)
    drill.measure("rto_seconds", 99.0, objective="rto_seconds")
    drill.cleanup(lambda: 1 / 0, "Fail back")
    drill._close("passed", None)
    assert (drill.data["status"], drill.data["reason"]) == verdict(drill.data["checks"], drill.data["measures"],
                                                                   drill.data["cleanups"])
    assert (drill.data["status"], drill.data["reason"]) == ("failed", "objective missed: rto_seconds")
