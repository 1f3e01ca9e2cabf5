"""The incident drills: pool-exhausted, cache-down, slow-query, cert-expiry — three passes in a row, and dry-run.

Each through the real `drillbook run` against the session's lab (real PostgreSQL pair, PgBouncer, Redis,
papermill; each runbook a real sub-notebook). Assertions read what the run archived (record.json, the
runbook's executed copy) or the lab itself. Under ``CI=true`` a missing PgBouncer or Redis fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CliResult, cli
from drillbook.lab import control
from drillbook.lab import redis as lab_redis
from drillbook.lab.sshd import sshd_binary
from drillbook.procedures import pool
from drillbook.targets.pgbouncer import PgBouncer
from drillbook.targets.redis import Redis
from labsupport import LabProject, add_repository_notebooks, lab_project, require_components  # noqa: F401

APPROVE = {"pool-exhausted": ["fault", "terminate"], "cache-down": ["fault", "restart"],
           "slow-query": ["fault", "cancel"], "cert-expiry": ["fault", "rotate"]}
RUNBOOK = {"pool-exhausted": "postgres-pool-exhausted", "cache-down": "redis-unavailable",
           "slow-query": "postgres-slow-queries", "cert-expiry": "certificate-expiry"}


@pytest.fixture(scope="module")
def library(lab_project: LabProject) -> LabProject:  # noqa: F811
    """The session's lab project with the repository's runbooks and drills in it."""
    return add_repository_notebooks(lab_project)


def run(project: LabProject, tmp_path: Path, name: str, *args: str, env: str = "local") -> tuple[CliResult, dict, Path]:
    archive = tmp_path / "archive"
    before = set((archive / "runs").glob("*")) if (archive / "runs").exists() else set()
    extra = [] if sshd_binary() else ["--skip-preflight"]
    result = cli(project.root, "run", name, "--env", env, *args, *extra, env={"DRILLBOOK_ARCHIVE": str(archive)}, timeout=600)
    added = set((archive / "runs").glob("*")) - before
    assert len(added) == 1, f"expected one new bundle, found {len(added)} (exit {result.code}):\n{result.output}"
    bundle = added.pop()
    return result, json.loads((bundle / "record.json").read_text()), bundle


def approvals(drill: str) -> list[str]:
    return [arg for gate in APPROVE[drill] for arg in ("--approve", gate)]


def by_name(items: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in items}


def components(project: LabProject) -> tuple[PgBouncer, Redis]:
    bouncer = PgBouncer.from_environment(project.env, project.root)
    cache = Redis.from_environment(project.env, project.root)
    assert bouncer is not None and cache is not None
    return bouncer, cache


def assert_lab_healthy(project: LabProject) -> None:
    report = control.status(project.root)
    assert report.healthy, (report.nodes, report.pgbouncer, report.redis)
    bouncer, cache = components(project)
    assert bouncer.round_trip() >= 0 and cache.ping()[0]
    assert sum(p.cl_waiting for p in bouncer.pools()) == 0


def assert_no_secret(project: LabProject, bundle: Path, output: str) -> None:
    """The components' passwords reach neither the bundle nor the terminal."""
    values = [project.paths.secret(name).read_text().strip()
              for name in ("redis_password", "pool_password", "pgbouncer_admin_password")]
    for path in [p for p in bundle.rglob("*") if p.is_file()]:
        text = path.read_bytes().decode("utf-8", "replace")
        assert not any(v in text for v in values), path
    assert not any(v in output for v in values)


def assert_specific(drill: str, record: dict, project: LabProject, before: dict) -> None:
    """What each drill must have measured and proved, beyond passing."""
    checks, measures = by_name(record["checks"]), by_name(record["measures"])
    assert checks[f"runbook {RUNBOOK[drill]} passed"]["passed"]
    if drill in ("pool-exhausted", "cache-down"):
        assert measures["refused_probes"]["value"] > 0  # the fault was real: clients were refused
        assert measures["served_after_fault_seconds"]["objective"] == "rto_seconds"
        assert measures["served_after_fault_seconds"]["value"] > 0
    if drill == "pool-exhausted":
        assert checks["the exhausted pool refuses new clients"]["passed"]
        with project.postgres() as pg:
            assert pool.holders(pg, 0.5, 60) == []
    elif drill == "cache-down":
        assert lab_redis.pid(project.paths) != before["redis_pid"]  # killed and started again
    elif drill == "slow-query":
        assert checks["the writer waits behind the runaway"]["passed"]
        assert "canceling statement" in checks["the runaway was cancelled"]["detail"]
        assert measures["writes_resumed_after_fault_seconds"]["value"] > 0
        assert measures["write_p95_ms"]["objective"] == "latency_p95_ms"
    elif drill == "cert-expiry":
        assert "postgres/pg1" in checks["the expiry check fails and names what serves the certificate"]["detail"]
        assert measures["failed_probes_cert_expiry"]["value"] == 0
        assert (project.paths.tls / "server.crt").read_bytes() != before["cert"]


@pytest.mark.integration
@pytest.mark.parametrize("drill", list(APPROVE))
def test_incident_drill_passes_three_times_in_a_row(library: LabProject, tmp_path: Path, drill: str) -> None:
    require_components()
    for attempt in range(3):
        before = {"redis_pid": lab_redis.pid(library.paths), "cert": (library.paths.tls / "server.crt").read_bytes()}
        result, record, bundle = run(library, tmp_path, drill, *approvals(drill))
        assert result.code == 0 and record["status"] == "passed", (attempt, record["reason"], result.output[-3000:])
        assert_no_secret(library, bundle, result.output)
        assert_specific(drill, record, library, before)
        assert_lab_healthy(library)


@pytest.mark.integration
@pytest.mark.parametrize("drill", list(APPROVE))
def test_incident_drill_dry_run_changes_nothing(library: LabProject, tmp_path: Path, drill: str) -> None:
    require_components()
    bouncer, _ = components(library)
    before = (lab_redis.pid(library.paths), (library.paths.tls / "server.crt").read_bytes(), bouncer.pool_size())
    result, record, bundle = run(library, tmp_path, drill, "--dry-run", *approvals(drill))
    assert result.code == 0 and record["status"] == "passed" and record["dry_run"] is True, result.output[-3000:]
    mutating = [s for s in record["steps"] if s["mutating"]]
    assert mutating and all(s["status"] == "dry-run" for s in mutating)
    child = json.loads((bundle / "attachments" / f"{RUNBOOK[drill]}.journal.json").read_text())
    assert child["status"] == "passed"
    assert all(s["status"] in ("dry-run", "not-applicable") for s in child["steps"] if s["mutating"])
    assert any(not s["mutating"] and s["status"] == "passed" for s in child["steps"])  # its Diagnose ran
    assert (lab_redis.pid(library.paths), (library.paths.tls / "server.crt").read_bytes(), bouncer.pool_size()) == before
    assert_lab_healthy(library)
