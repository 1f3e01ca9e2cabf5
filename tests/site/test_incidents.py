"""The incidents page: an incident's runs, its timeline and its response-target verdicts, built from a real archive.

The runs are written through drillbook's own archive (``base_record``, ``complete_record``,
``record_run``: signed bundles and ledger entries) with chosen times, so the measured durations are
known; only the kernel is skipped (tests/test_resume.py runs the real thing). The site is generated and
built by ``mkdocs build --strict``, which fails on a broken link or anchor.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import REPO, Project, cli
from drillbook.config import environments
from drillbook.config.secrets import Redactor
from drillbook.evidence import keys, record
from drillbook.evidence.archive import record_run
from drillbook.site import build as site_build
from drillbook.site import incidents as site_incidents

T0 = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=6)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _step(title: str, start: datetime, status: str, mutating: bool = True, **extra: object) -> dict:
    return {"title": title, "mutating": mutating, "gate": None, "started_at": _iso(start),
            "ended_at": _iso(start + timedelta(seconds=5)), "seconds": 5.0, "status": status, **extra}


def _run(project: Project, run_id: str, start: datetime, end: datetime, status: str, steps: list[dict], *,
         incident: str | None, severity: str | None = "P1", resumes: str | None = None, operator: str = "ana@host",
         env: str = "local") -> str:
    base = record.base_record(
        run_id=run_id, drill="five", kind="runbook", title="Five steps", notebook="runbooks/five.ipynb",
        env=environments.load_environment(env, project.root), parameters={}, dry_run=False, approve=[],
        change=None, controls=[], source={"path": "runbooks/five.ipynb", "sha256": "0" * 64, "git_commit": None,
                                          "git_dirty": None},
        operator=operator, operator_source="DRILLBOOK_OPERATOR", mode="interactive", severity=severity,
        incident=incident)
    base["started_at"] = _iso(start)
    if resumes:
        base["resumes"] = resumes
    journal = {"steps": steps, "checks": [{"name": "steady state", "passed": True, "detail": "", "at": _iso(start)}],
               "measures": [], "cleanups": [], "attachments": [],
               "gates": [{"gate": "promote", "step": "Promote", "at": _iso(start + timedelta(seconds=30)),
                          "how": "typed promote", "method": "panel"}] if not resumes else [], "operator": operator}
    done = record.complete_record(base, status=status, reason=None if status == "passed" else "step failed",
                                  seconds=(end - start).total_seconds(), kernel_journal=journal,  # type: ignore[arg-type]
                                  failing_cell=None, results=None)
    done["finished_at"] = _iso(end)
    record_run(project.archive, keys.load_or_create_signing_key(), done, Redactor())
    return run_id


def _incident(project: Project, incident: str, severity: str, start: datetime, minutes_to_pass: float) -> list[str]:
    """Three runs: failed at step 3, resumed and failed at step 4, resumed again and passed."""
    a, b, c = (f"{incident}-run-{n}" for n in "abc")
    first_action = start + timedelta(minutes=2)
    _run(project, a, start, start + timedelta(minutes=5), "error",
         [_step("Check roles", start + timedelta(minutes=1), "passed", mutating=False),
          _step("Fence the old primary", first_action, "passed"),
          _step("Repoint the application", start + timedelta(minutes=4), "failed",
                detail="RuntimeError: <b>DNS</b> | not ready")], incident=incident, severity=severity)
    _run(project, b, start + timedelta(minutes=10), start + timedelta(minutes=12), "failed",
         [_step("Fence the old primary", start + timedelta(minutes=10), "skipped", resumed_from=a,
                detail=f"completed in run {a}; not run again"),
          _step("Repoint the application", start + timedelta(minutes=11), "failed")],
         incident=incident, severity=severity, resumes=a, operator="bo@host")
    _run(project, c, start + timedelta(minutes=minutes_to_pass - 3), start + timedelta(minutes=minutes_to_pass),
         "passed", [_step("Repoint the application", start + timedelta(minutes=minutes_to_pass - 2), "passed")],
         incident=None, severity=None, resumes=b)  # the incident is inherited from the run it resumes
    return [a, b, c]


def test_an_incident_of_three_runs_shows_its_timeline_and_verdicts(project: Project,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "mkdocs.yml", project.root / "mkdocs.yml")
    shutil.copytree(REPO / "docs", project.root / "docs",
                    ignore=lambda folder, names: [n for n in names if Path(folder) == REPO / "docs"
                                                  and n in ("runbooks", "status", "evidence")])
    project.write_env("staging", "description: staging\nhosts:\n  here:\n    shell: local\n"
                      "response_targets:\n  P2: 20\n")
    resolved = _incident(project, "INC-42", "P1", T0, minutes_to_pass=45)
    _run(project, "INC-7-run-a", T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=1), "failed",
         [_step("Fence the old primary", T0 + timedelta(hours=1), "failed")], incident="INC-7", severity="P2",
         env="staging")  # still open; staging's own P2 target is 20 min
    _run(project, "no-incident", T0, T0 + timedelta(minutes=1), "passed", [], incident=None)

    site_build.generate(project.root, project.archive, now=NOW, state=project.state)
    page = (project.root / "docs" / "status" / "incidents.md").read_text()
    # Open incidents first, then the resolved one.
    assert page.index("## INC-7") < page.index("## INC-42")
    inc42 = page[page.index("## INC-42"):]
    assert "**resolved** · severity P1" in inc42 and "3 run(s)" in inc42
    assert "Time to first action | 2.0 min — met (target 60 min)" in inc42
    assert "Time to resolution | 45.0 min — met (target 60 min)" in inc42
    for run_id in resolved:
        assert f"(../evidence/runs/{run_id}/index.md)" in inc42  # links to each run's evidence
    # The timeline: who did what, when, in order, from the three records.
    assert "2026-11-30 03:00:00 UTC | ana@host | started run INC-42-run-a of five on local in a notebook (LIVE)" in inc42
    assert "ana@host | approved gate promote (panel)" in inc42
    assert "ana@host | mutating step Fence the old primary: passed" in inc42
    assert "bo@host | started run INC-42-run-b of five on local in a notebook (LIVE, resuming run INC-42-run-a)" in inc42
    assert "bo@host | mutating step Fence the old primary: skipped — completed in run INC-42-run-a" in inc42
    assert "run ended passed" in inc42
    assert "&lt;b&gt;DNS&lt;/b&gt; \\| not ready" in inc42  # a record's text is escaped, never HTML or a cell break
    assert "no-incident" not in page
    inc7 = page[page.index("## INC-7"):page.index("## INC-42")]
    assert "**open** · severity P2" in inc7
    assert "Time to first action | 0.0 min — met (target 20 min)" in inc7  # its failed step did run
    assert "Time to resolution | not yet (5.0 h so far) — missed (target 20 min)" in inc7
    # The dashboard lists the open incident first, linked to its section.
    dashboard = (project.root / "docs" / "status" / "index.md").read_text()
    assert dashboard.index("1 open incident(s)") < dashboard.index("Evidence verified")
    assert "[INC-7](incidents.md#incident-inc-7) · severity P2" in dashboard
    assert "INC-42" not in dashboard
    # Reverse links: the resumed run's page names the run that resumed it, and the other way round.
    a, b, c = resolved
    run_a = (project.root / "docs" / "evidence" / "runs" / a / "index.md").read_text()
    assert f"This run was resumed by run [{b}](../{b}/index.md)." in run_a
    run_b = (project.root / "docs" / "evidence" / "runs" / b / "index.md").read_text()
    assert f"Resumes run [{a}](../{a}/index.md)." in run_b and f"resumed by run [{c}](../{c}/index.md)" in run_b
    assert cli(project, "verify").code == 0
    site_build.build(project.root, project.root / "site")  # --strict: every link and anchor resolves
    assert (project.root / "site" / "status" / "incidents" / "index.html").is_file()
    # Full pages stay bounded: an open incident's runs keep theirs, an old resolved one's may go.
    monkeypatch.setattr(site_incidents, "RECENT_INCIDENTS", 0)
    site_build.generate(project.root, project.archive, full_runs=0, now=NOW, state=project.state)
    page = (project.root / "docs" / "status" / "incidents.md").read_text()
    assert "(../evidence/runs/INC-7-run-a/index.md)" in page and "INC-42-run-a/index.md" not in page
    assert (project.root / "docs" / "evidence" / "runs" / "INC-7-run-a" / "index.md").is_file()
    assert not (project.root / "docs" / "evidence" / "runs" / a).exists()
