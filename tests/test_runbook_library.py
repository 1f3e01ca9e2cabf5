"""The incident runbook library: lint's rules (severity, sections), the alert table, the site's grouping,
the runbooks that need PgBouncer or Redis saying so without them, and every runbook in dry-run on the lab.

Unit tests first (lint on a temporary project, the index and the page from summaries), then real runs
(`drillbook run`, papermill, the session's lab).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import REPO, Project, cli
from drillbook.config import catalog
from drillbook.config.lint import lint_project
from drillbook.lab import control
from drillbook.config.runbook_rules import missing_sections
from drillbook.procedures import corruption
from drillbook.lab.environment import environment_data
from drillbook.lab.oslevel import lab_user
from drillbook.lab.sshd import sshd_binary
from drillbook.site.data import RunSummary
from drillbook.site.runbook_index import alerts_table, incident_index, last_drill_section
from labsupport import LabProject, add_repository_notebooks, lab_project, require_components  # noqa: F401

# Runbooks no incident drill runs: dry-run here directly (the drills' dry-runs cover the others).
UNDRILLED = sorted({p.stem for p in (REPO / "runbooks").glob("*.ipynb")} - {
    "postgres-pool-exhausted", "redis-unavailable", "postgres-slow-queries", "certificate-expiry",  # incident drills
    "postgres-failover", "postgres-backup-restore", "rotate-db-credentials", "rotate-tls-certificate",
    "rotate-ssh-key"})  # the recovery drills (tests/test_drills.py)
# A healthy standby is watched for wait_seconds (30 by default) before the runbook says so: the
# watch itself is the partition-standby drill's (tests/test_drills_network_disk.py); here it only runs.
DRY_RUN_PARAMETERS = {"postgres-replication-lag": ["-p", "wait_seconds=2"]}


# ============================================================================= lint
def test_every_runbook_in_the_repository_passes_lint_with_a_severity_and_its_sections() -> None:
    assert lint_project(REPO) == []
    runbooks = [e for e in catalog.load_catalog(REPO) if e.kind == "runbook"]
    assert len(runbooks) >= 9
    for entry in runbooks:
        assert entry.meta.severity in ("P0", "P1", "P2", "P3"), entry.name
        assert entry.meta.alert and entry.meta.symptom, entry.name
        assert missing_sections(nbformat.read(str(entry.path), as_version=4)) == [], entry.name


def test_lint_refuses_a_runbook_without_a_severity_or_a_section(project: Project) -> None:
    target = project.root / "runbooks" / "postgres-pool-exhausted.ipynb"
    shutil.copy(REPO / "runbooks" / target.name, target)
    assert [str(p) for p in lint_project(project.root)] == []
    nb = nbformat.read(str(target), as_version=4)
    del nb.metadata["drillbook"]["severity"]
    for cell in nb.cells:
        if cell.cell_type == "markdown":  # the Prevent heading becomes a line inside a code fence
            cell.source = cell.source.replace("## Prevent", "```\n## Prevent\n```")
    nbformat.write(nb, str(target))
    problems = [str(p) for p in lint_project(project.root)]
    assert any("no metadata.drillbook.severity" in p for p in problems), problems
    assert any("missing section heading(s): Prevent" in p for p in problems), problems
    result = cli(project, "lint")
    assert result.code != 0 and "severity" in result.output


def test_a_severity_outside_p0_to_p3_is_refused(project: Project) -> None:
    target = project.root / "runbooks" / "redis-unavailable.ipynb"
    shutil.copy(REPO / "runbooks" / target.name, target)
    nb = nbformat.read(str(target), as_version=4)
    nb.metadata["drillbook"]["severity"] = "P5"
    nbformat.write(nb, str(target))
    assert any("severity" in str(p) for p in lint_project(project.root))


# ============================================================================= docs and site
def test_the_alert_table_in_incident_response_matches_the_runbooks() -> None:
    text = (REPO / "docs" / "operations" / "incident-response.md").read_text()
    found = re.search(r"<!-- alerts:[^>]*-->\n(.*?)\n<!-- /alerts -->", text, re.S)
    assert found, "the generated alert table is missing from incident-response.md"
    assert found.group(1).strip() == alerts_table(catalog.load_catalog(REPO)).strip(), \
        "docs/operations/incident-response.md's alert table disagrees with the runbooks' metadata: regenerate it with " \
        "drillbook.site.runbook_index.refresh_alerts_table()"
    for severity, target in (("P0", "15 minutes"), ("P1", "1 hour"), ("P2", "4 hours"), ("P3", "24 hours")):
        assert re.search(rf"\*\*{severity}\*\*.*\*\*{target}\*\*", text), severity
    assert "## Severities and response targets" in text.replace("## 1. ", "## ")


def summary(run_id: str, drill: str, status: str, runbooks: tuple[str, ...], kind: str = "drill") -> RunSummary:
    return RunSummary(seq=1, run_id=run_id, drill=drill, env="local", kind=kind, title=drill, status=status,
                      reason=None, started_at="2026-11-30T10:00:00+00:00", finished_at="2026-11-30T10:01:00+00:00",
                      dry_run=False, controls=(), objectives={}, measures=(), has_html=False, readable=True,
                      runbooks=runbooks)


def test_the_index_groups_runbooks_by_severity_and_symptom_and_a_page_shows_its_last_drill() -> None:
    entries = catalog.load_catalog(REPO)
    index = incident_index(entries, "runbooks/index.md")
    by_severity = index.split("## Runbooks by symptom")[0]
    p1 = by_severity.index("### P1: respond within 1 hour")
    p2 = by_severity.index("### P2: respond within 4 hours")
    assert p1 < by_severity.index("postgres-pool-exhausted") < p2 < by_severity.index("postgres-slow-queries")
    assert "the cache does not answer (PING fails)" in index.split("## Runbooks by symptom")[1]
    entry = next(e for e in entries if e.name == "redis-unavailable")
    runs = [summary("r1", "cache-down", "passed", ("redis-unavailable",)),
            summary("r2", "cache-down", "failed", ("redis-unavailable",)),
            summary("r3", "pool-exhausted", "passed", ("postgres-pool-exhausted",))]
    page = last_drill_section(entry, runs, {"r2"})
    assert "cache-down" in page and "failed" in page and "r2" in page and "r3" not in page
    assert "No drill" in last_drill_section(entry, runs[2:], set())


# ============================================================================= against the lab
@pytest.fixture(scope="module")
def library(lab_project: LabProject) -> LabProject:  # noqa: F811
    """The session's lab project with the repository's runbooks and drills in it."""
    return add_repository_notebooks(lab_project)


def run(project: LabProject, tmp_path: Path, name: str, *args: str, env: str = "local") -> tuple[str, dict, Path]:
    archive = tmp_path / "archive"
    extra = [] if sshd_binary() else ["--skip-preflight"]
    result = cli(project.root, "run", name, "--env", env, *args, *extra, env={"DRILLBOOK_ARCHIVE": str(archive)}, timeout=600)
    bundles = sorted((archive / "runs").glob("*"))
    assert bundles, result.output
    return result.output, json.loads((bundles[-1] / "record.json").read_text()), bundles[-1]


@pytest.mark.integration
def test_without_pgbouncer_or_redis_their_runbooks_say_not_applicable(library: LabProject, tmp_path: Path) -> None:
    data = environment_data(library.ports, lab_user())
    data["services"]["pgbouncer"]["binary"] = "pgbouncer-not-installed"
    data["services"]["redis"]["binary"] = "redis-server-not-installed"
    (library.root / "parameters" / "environments" / "bare.yaml").write_text(yaml.safe_dump(data))
    for name, binary in (("postgres-pool-exhausted", "pgbouncer-not-installed"),
                         ("redis-unavailable", "redis-server-not-installed")):
        output, record, _ = run(library, tmp_path, name, "--dry-run", env="bare")
        assert record["status"] == "passed", output[-2000:]
        skipped = [s for s in record["steps"] if s["status"] == "not-applicable"]
        assert skipped and all(f"{binary} is not installed on host lab" in s["detail"] for s in skipped), record["steps"]


@pytest.mark.integration
@pytest.mark.parametrize("name", UNDRILLED)
def test_undrilled_runbook_dry_runs_against_the_lab(library: LabProject, tmp_path: Path, name: str) -> None:
    require_components()
    output, record, _ = run(library, tmp_path, name, "--dry-run", *DRY_RUN_PARAMETERS.get(name, []))
    assert record["status"] == "passed" and record["dry_run"] is True, output[-3000:]
    assert any(not s["mutating"] and s["status"] == "passed" for s in record["steps"])  # Diagnose ran
    assert all(s["status"] in ("dry-run", "not-applicable") for s in record["steps"] if s["mutating"])




@pytest.mark.integration
def test_point_in_time_restore_without_a_target_refuses_a_live_run_before_any_change(library: LabProject, tmp_path: Path) -> None:
    output, record, _ = run(library, tmp_path, "postgres-point-in-time-restore")
    assert record["dry_run"] is False and record["status"] != "passed", output[-3000:]
    assert "one recovery target is given" in str(record["reason"]), record["reason"]
    assert not [s for s in record["steps"] if s["mutating"]], record["steps"]  # refused before archiving or restoring


@pytest.mark.integration
def test_data_corruption_needs_rollback_typed_then_swaps_a_bad_change_back(library: LabProject, tmp_path: Path) -> None:
    gates = ("--approve", "stop-writes", "--approve", "restore", "--approve", "resume-writes")
    with library.postgres() as pg:
        backup = pg.backups.base_backup()
        try:
            with pg.connections.connect() as conn:
                good = conn.execute("SELECT sum(price_cents) FROM products").fetchone()[0]
                conn.execute("UPDATE products SET price_cents = 1 WHERE id <= 100")  # the bad change
                bad = conn.execute("SELECT sum(price_cents) FROM products").fetchone()[0]
            output, record, _ = run(library, tmp_path, "data-corruption", "-p", f"backup_path={backup.path}", *gates)
            assert record["status"] == "error" and "ROLLBACK" in record["reason"], output[-3000:]
            with pg.connections.connect(pg.replication.primary(), login="admin", dbname="app") as conn:  # untouched
                assert conn.execute("SELECT sum(price_cents) FROM products").fetchone()[0] == bad
            with pg.connections.connect(pg.replication.primary()) as conn:  # and writes still stopped
                assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
            output, record, _ = run(library, tmp_path, "data-corruption", "-p", f"backup_path={backup.path}", *gates,
                                    "--approve", "ROLLBACK")
            assert record["status"] == "passed", output[-3000:]
            steps = {s["title"]: s for s in record["steps"]}
            assert steps["Replace public.products with the restored rows"]["status"] == "passed"
            with pg.connections.connect() as conn:
                assert conn.execute("SELECT sum(price_cents) FROM products").fetchone()[0] == good
                assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "off"
            assert not list((library.paths.data / "scratch").glob("corruption*"))
        finally:
            corruption.resume_writes(pg)
            pg.backups.remove_backup(backup)


@pytest.mark.integration
def test_complete_outage_names_the_first_part_down_and_cold_starts_it(library: LabProject, tmp_path: Path) -> None:
    require_components()
    from drillbook.lab import pgbouncer as lab_pgbouncer
    from drillbook.lab import redis as lab_redis

    assert lab_pgbouncer.stop(library.paths) and lab_redis.stop(library.paths)  # the pool and the cache are gone
    try:
        output, record, bundle = run(library, tmp_path, "complete-outage", "--approve", "start")
        assert record["status"] == "passed", output[-3000:]
        steps = {s["title"]: s for s in record["steps"]}
        assert steps["Cold start"]["status"] == "passed" and "PgBouncer, Redis" in steps["Cold start"]["detail"]
        printed = (bundle / "notebook.ipynb").read_text() if (bundle / "notebook.ipynb").exists() else output
        assert "START HERE: 3. PgBouncer: DOWN" in printed
        assert lab_pgbouncer.pid(library.paths) and lab_redis.pid(library.paths)
    finally:
        control.up(library.root)  # whatever happened, leave the lab whole
