"""The three recovery drills and their runbooks: live, dry-run, three in a row, failing and erroring.

Pure parts first (choosing the node to promote, comparing checksums, the fixed-rate probe), then
the drills through the real `drillbook run` against the session's lab (real PostgreSQL pair,
real sshd, real papermill; each runbook a real sub-notebook). Every assertion reads what the run
archived (record.json, the executed runbook in attachments/) or the lab itself.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import REPO, CliResult, cli
from drillbook.lab import control
from drillbook.lab.sshd import sshd_binary
from drillbook.lab.state import NODES
from drillbook.measure.compute import probe_resolution
from drillbook.measure.isolated import IsolatedLoad
from drillbook.measure.load import Probe
from drillbook.pki import issue_server_certificate, make_ca
from drillbook.procedures import failover, restore, rotation
from drillbook.procedures.failover import FailoverRefused
from drillbook.targets.postgres.results import TableSum
from labsupport import LabProject, free_ports, lab_project, require_sshd  # noqa: F401

DRILLS = ("failover", "backup-restore", "key-rotation")
APPROVE = {"failover": ["fault", "promote"], "backup-restore": [], "key-rotation": ["rotate"]}
RUNBOOK = {"failover": ["postgres-failover"], "backup-restore": ["postgres-backup-restore"],
           "key-rotation": ["rotate-db-credentials", "rotate-tls-certificate", "rotate-ssh-key"]}


# ============================================================================= pure parts
def test_choose_promotes_the_most_caught_up_unfenced_standby() -> None:
    roles = {"pg1": "down", "pg2": "standby", "pg3": "standby"}
    assert failover.choose(roles, set(), {"pg2": 100, "pg3": 200}) == ("pg1", "pg3")
    assert failover.choose(roles, {"pg3"}, {"pg2": 100, "pg3": 200}) == ("pg1", "pg2")
    assert failover.choose({"pg1": "primary", "pg2": "standby"}, set(), {"pg2": 1}) == ("pg1", "pg2")  # switchover
    assert failover.choose(roles, set(), {}, new="pg2") == ("pg1", "pg2")


@pytest.mark.parametrize("roles, fenced, kwargs, message", [
    ({"pg1": "primary", "pg2": "primary"}, set(), {}, "split brain"),
    ({"pg1": "primary", "pg2": "down"}, {"pg2"}, {}, "no standby can take over"),  # the failover already happened
    ({"pg1": "down", "pg2": "standby"}, {"pg2"}, {}, "no standby can take over"),
    ({"pg1": "down", "pg2": "down", "pg3": "standby"}, set(), {}, "say which was the primary"),
    ({"pg1": "standby", "pg2": "standby"}, set(), {}, "no node is down"),
    ({"pg1": "primary", "pg2": "standby"}, set(), {"old": "pg2"}, "is a standby, not the primary"),
    ({"pg1": "down", "pg2": "standby"}, set(), {"new": "pg1"}, "cannot be promoted"),
])
def test_choose_refuses_what_it_cannot_do_safely(roles: dict, fenced: set, kwargs: dict, message: str) -> None:
    with pytest.raises(FailoverRefused, match=message) as caught:
        failover.choose(roles, fenced, {}, **kwargs)
    assert caught.value.hint


def test_restored_tables_are_compared_with_the_source_at_the_backup_point() -> None:
    same, other = TableSum(10, "a" * 32), TableSum(10, "b" * 32)
    verdicts = {v.table: v for v in restore.compare(
        before={"public.t": same, "public.moved": same, "public.gone": same, "drillbook.writes": TableSum(5, "x")},
        after={"public.t": same, "public.moved": other, "public.gone": same, "drillbook.writes": TableSum(9, "y")},
        restored={"public.t": same, "public.moved": other, "public.extra": same, "drillbook.writes": TableSum(7, "z")},
        volatile=["drillbook"])}
    assert verdicts["public.t"].ok and "10 rows" in verdicts["public.t"].detail
    assert not verdicts["public.moved"].ok and "changed during the backup" in verdicts["public.moved"].detail
    assert not verdicts["public.gone"].ok and "missing" in verdicts["public.gone"].detail
    assert not verdicts["public.extra"].ok and "only in the restored copy" in verdicts["public.extra"].detail
    assert verdicts["drillbook.writes"].ok  # 5 ≤ 7 ≤ 9: a point in time between before and after
    late = restore.compare({"s.t": TableSum(5, "x")}, {"s.t": TableSum(9, "y")}, {"s.t": TableSum(12, "z")}, ["s"])
    assert not late[0].ok
    wrong = restore.compare({"public.t": same}, {"public.t": same}, {"public.t": other})
    assert not wrong[0].ok and "restored 10 rows" in wrong[0].detail


def test_certificate_fingerprint_is_the_sha256_of_its_der() -> None:
    import ssl

    ca_cert, ca_key = make_ca()
    cert, _ = issue_server_certificate(ca_cert, ca_key, days=10)
    assert rotation.fingerprint(cert) == hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert)).hexdigest()
    assert 9.9 <= rotation.days_left(rotation.not_after(cert)) <= 10.1


def test_fixed_rate_probe_keeps_its_schedule_when_connections_are_slow() -> None:
    class Slow:
        def execute(self, _: str) -> None:
            time.sleep(0.12)

        def close(self) -> None:
            pass

    closed_loop = Probe(Slow, interval=0.02)
    fixed_rate = Probe(Slow, interval=0.02, max_in_flight=8)
    for probe in (closed_loop, fixed_rate):
        probe.start()
    time.sleep(0.8)
    for probe in (closed_loop, fixed_rate):
        probe.stop()
        probe.join(5)
    assert probe_resolution(closed_loop.results) >= 0.12  # each slow attempt delays the next
    # Relative, not a wall-clock limit: fixed-rate starts keep their schedule, closed-loop ones do not.
    assert probe_resolution(fixed_rate.results) < probe_resolution(closed_loop.results) / 2
    assert len(fixed_rate.results) >= 20
    starts = [p.started for p in fixed_rate.results]
    assert starts == sorted(starts) and all(p.ok for p in fixed_rate.results)


# ============================================================================= against the lab
@pytest.fixture(scope="module")
def drills(lab_project: LabProject) -> LabProject:  # noqa: F811
    """The session's lab project with the repository's runbooks and drills in it."""
    for folder in ("runbooks", "notebooks/drills"):
        for notebook in (REPO / folder).glob("*.ipynb"):
            (lab_project.root / folder / notebook.name).write_bytes(notebook.read_bytes())
    return lab_project


def run(project: LabProject, tmp_path: Path, drill: str, *args: str, env: str = "local") -> tuple[CliResult, dict, Path]:
    """`drillbook run` in a subprocess; returns its output, the archived record and the bundle."""
    archive = tmp_path / "archive"
    before = set((archive / "runs").glob("*")) if (archive / "runs").exists() else set()
    extra = [] if sshd_binary() else ["--skip-preflight"]  # the test lab lists lab-ssh as a required host
    result = cli(project.root, "run", drill, "--env", env, *args, *extra,
                 env={"DRILLBOOK_ARCHIVE": str(archive)}, timeout=600)
    added = set((archive / "runs").glob("*")) - before
    assert len(added) == 1, f"expected one new bundle, found {len(added)} (exit {result.code}):\n{result.output}"
    bundle = added.pop()
    return result, json.loads((bundle / "record.json").read_text()), bundle


def live(drill: str) -> list[str]:
    return [arg for gate in APPROVE[drill] for arg in ("--approve", gate)]


def one(named: dict[str, dict], prefix: str) -> dict:
    """The one entry whose name starts with ``prefix`` (names carry node names)."""
    found = [v for k, v in named.items() if k.startswith(prefix)]
    assert len(found) == 1, (prefix, list(named))
    return found[0]


def measures(record: dict) -> dict[str, dict]:
    return {m["name"]: m for m in record["measures"]}


def checks(record: dict) -> dict[str, dict]:
    return {c["name"]: c for c in record["checks"]}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def lab_state(project: LabProject) -> dict:
    """What a drill could change, as comparable facts (secrets only as hashes): roles, timelines,
    server processes, login roles and their passwords, certificate, keys, rows, leftovers."""
    paths = project.paths
    with project.postgres() as pg:
        nodes = {s.name: (s.role, s.timeline, s.upstream_port, s.fenced) for s in pg.replication.states()}
        with pg.connections.connect(pg.replication.primary(), login="admin", dbname="app") as conn:
            logins = conn.execute("SELECT rolname, rolcanlogin, md5(coalesce(rolpassword, '')) FROM pg_authid "
                                  "WHERE rolname LIKE 'app%' ORDER BY 1").fetchall()
            writes = conn.execute("SELECT count(*) FROM drillbook.writes").fetchone()[0]
            started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    files = {name: digest(path) for name, path in {
        "app_user": paths.secret("app_user"), "app_password": paths.secret("app_password"),
        "server.crt": paths.tls / "server.crt", "authorized_keys": paths.ssh / "authorized_keys",
        "client_key": paths.ssh / "client_key"}.items()}
    left = sorted(str(p.relative_to(paths.data)) for d in ("backups", "scratch") for p in (paths.data / d).glob("*"))
    pids = {n: digest(paths.node(n) / "postmaster.pid") for n in NODES}  # a restart writes a new one
    return {"nodes": nodes, "logins": logins, "writes": writes, "primary_started": started, "files": files,
            "leftovers": left, "pids": pids}


def assert_healthy(project: LabProject) -> None:
    report = control.status(project.root)
    assert report.healthy, [(n.name, n.role, n.streaming, n.fenced) for n in report.nodes]


def executed_runbook(bundle: Path, name: str) -> nbformat.NotebookNode:
    """The runbook's executed copy in the bundle: a real papermill run, with outputs."""
    nb = nbformat.read(str(bundle / "attachments" / f"{name}.ipynb"), as_version=4)
    assert nb.metadata["papermill"]["parameters"]["run_id"].endswith(f".{name}")
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    child = json.loads((bundle / "attachments" / f"{name}.journal.json").read_text())
    assert child["status"] == "passed", child["reason"]
    return nb


@pytest.mark.integration
def test_isolated_load_keeps_its_resolution_while_this_process_is_busy(drills: LabProject) -> None:
    with drills.postgres() as pg:
        load = IsolatedLoad(writer=pg.connections.portable_connector(), probe=pg.connections.portable_connector(),
                            run="isolated-test", probe_interval=0.04).start()
        try:
            load.wait_steady()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:  # hog this interpreter (as papermill does in a drill kernel)
                json.dumps([{"x": list(range(200))} for _ in range(200)])
        finally:
            load.stop()
        with pg.connections.connect() as conn:
            outcome = load.outcome(t0, conn)
            assert load.purge(conn) == outcome.writes
    assert outcome.failed_probes == 0 and outcome.probes >= 40 and outcome.rpo_writes == 0
    # The probe kept probing while this interpreter was busy for 2 s (the figure itself is bench/drills.py's).
    assert 0 < outcome.probe_resolution_seconds < 0.5, outcome


@pytest.mark.integration
@pytest.mark.parametrize("drill", DRILLS)
def test_dry_run_passes_and_changes_nothing(drills: LabProject, tmp_path: Path, drill: str) -> None:
    if drill == "key-rotation":
        require_sshd()
    assert_healthy(drills)
    before = lab_state(drills)
    result, record, bundle = run(drills, tmp_path, drill, "--dry-run", *live(drill))
    assert result.code == 0, result.output
    assert record["status"] == "passed" and record["dry_run"] is True
    assert lab_state(drills) == before
    mutating = [s for s in record["steps"] if s["mutating"]]
    assert mutating and all(s["status"] == "dry-run" and s["detail"].startswith("would: ") for s in mutating)
    assert record["measures"] == []  # nothing was measured, so nothing is claimed
    assert record["attachments"] == [f"attachments/{name}.ipynb" for name in RUNBOOK[drill]]
    for name in RUNBOOK[drill]:
        nb = executed_runbook(bundle, name)
        assert nb.metadata["papermill"]["parameters"]["dry_run"] is True
        assert "Nothing was changed" in json.dumps([c.get("outputs") for c in nb.cells])


def check_failover(record: dict, bundle: Path) -> None:
    m, c = measures(record), checks(record)
    assert m["rto_seconds"]["verdict"] == "met" and 0 < m["rto_seconds"]["value"] <= 30
    assert m["rpo_seconds"]["objective_value"] == 5 and m["rpo_seconds"]["verdict"] == "met"
    assert m["failed_probes"]["value"] >= 1  # the primary really went away
    assert 0 < m["probe_resolution_seconds"]["value"] < m["rto_seconds"]["value"]  # recorded; bench/drills.py reports it
    assert m["rto_seconds"]["value"] >= m["promote_step_seconds"]["value"]
    for prefix in ("runbook postgres-failover passed", "one primary, and it is not the crashed", "pair healthy again",
                   "a new primary acknowledged writes"):
        assert one(c, prefix)["passed"], prefix
    assert [v["passed"] for k, v in c.items() if " holds the same data as " in k] == [True]
    assert [v["passed"] for k, v in c.items() if k.startswith("postgres-failover: ")] == [True, True]  # only primary, fenced
    steps = {s["title"].split()[0]: s for s in record["steps"]}
    assert steps["Crash"]["status"] == "passed" and steps["Rebuild"]["detail"].startswith("rebuilt")
    nb = executed_runbook(bundle, "postgres-failover")
    assert "promote" in nb.metadata["papermill"]["parameters"]["approve"]


def check_backup_restore(record: dict, bundle: Path) -> None:
    m, c = measures(record), checks(record)
    tables = {k.split(": ")[1] for k in c if k.startswith("postgres-backup-restore: ") and "equals the source" in k}
    assert tables == {"public.customers", "public.products", "public.orders", "public.order_lines", "drillbook.writes"}
    assert all(c[f"postgres-backup-restore: {t}: restored copy equals the source"]["passed"] for t in tables)
    assert "40000 rows" in c["postgres-backup-restore: public.order_lines: restored copy equals the source"]["detail"]
    assert m["restore_seconds"]["objective"] == "rto_seconds" and m["restore_seconds"]["verdict"] == "met"
    assert m["backup_age_seconds"]["objective_value"] == 3600 and m["backup_age_seconds"]["verdict"] == "met"
    assert m["backup_seconds"]["value"] > 0 and m["backup_bytes"]["value"] > 1_000_000
    assert m["failed_probes"]["value"] == 0 and m["writes_acknowledged"]["value"] > 0  # writes went on
    assert m["probe_resolution_seconds"]["value"] > 0  # recorded; its size is bench/drills.py's business
    assert c["no backup or scratch instance left behind"]["passed"]
    executed_runbook(bundle, "postgres-backup-restore")


def check_key_rotation(record: dict, bundle: Path) -> None:
    m, c = measures(record), checks(record)
    for what in ("credentials", "tls"):
        assert m[f"failed_probes_{what}"]["value"] == 0 and m[f"failed_probes_{what}"]["verdict"] == "met"
        assert "probe connections failed on 2 node(s)" in m[f"failed_probes_{what}"]["detail"]
    assert m["probe_resolution_seconds"]["value"] > 0  # recorded; its size is bench/drills.py's business
    for name in ("pg1 serves a new certificate", "pg2's new certificate verifies against the CA",
                 "rotate-tls-certificate: pg1 serves the new certificate", "the old key is refused by lab-ssh",
                 "the new key logs in to lab-ssh", "the application now logs in with the other login role"):
        assert c[name]["passed"], c[name]
    assert all(v["passed"] for v in c.values())
    for name in RUNBOOK["key-rotation"]:
        executed_runbook(bundle, name)


@pytest.mark.integration
@pytest.mark.parametrize("drill", DRILLS)
def test_drill_passes_three_times_in_a_row(drills: LabProject, tmp_path: Path, drill: str) -> None:
    if drill == "key-rotation":
        require_sshd()
    seen = []
    for attempt in range(3):
        assert_healthy(drills)
        before = lab_state(drills)
        result, record, bundle = run(drills, tmp_path, drill, *live(drill))
        assert result.code == 0, f"run {attempt + 1}: {result.output}"
        assert record["status"] == "passed" and record["reason"] is None, [c for c in record["checks"] if not c["passed"]]
        assert [c["status"] for c in record["cleanups"]] == ["passed"] * len(record["cleanups"])
        assert record["attachments"] == [f"attachments/{name}.ipynb" for name in RUNBOOK[drill]]
        {"failover": check_failover, "backup-restore": check_backup_restore, "key-rotation": check_key_rotation}[drill](
            record, bundle)
        assert_healthy(drills)  # back to steady state, ready for the next run
        after = lab_state(drills)
        assert after["leftovers"] == [] and after["writes"] == before["writes"]  # the drill cleaned up after itself
        seen.append((before, after))
        leaks = [secret for secret in (drills.paths.secret("app_password").read_text().strip(),
                                       (drills.paths.ssh / "client_key").read_text().strip().splitlines()[1])
                 if any(secret in p.read_text(errors="replace") for p in bundle.rglob("*") if p.is_file())]
        assert leaks == [], "a rotated secret reached the evidence"
    if drill == "failover":  # each run promoted the standby of the time: the roles alternate
        assert [b["nodes"] != a["nodes"] for b, a in seen] == [True] * 3
    if drill == "key-rotation":  # each run changed every credential it rotates
        for before, after in seen:
            assert all(before["files"][f] != after["files"][f] for f in ("app_user", "server.crt", "client_key"))
    assert cli(drills.root, "verify", env={"DRILLBOOK_ARCHIVE": str(tmp_path / "archive")}).code == 0


def strict_environment(project: LabProject, name: str, **objectives: float) -> str:
    """A copy of the lab's environment with other objectives (the same lab, judged harder)."""
    data = yaml.safe_load((project.root / "parameters" / "environments" / "local.yaml").read_text())
    data["objectives"].update(objectives)
    (project.root / "parameters" / "environments" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return name


@pytest.mark.integration
@pytest.mark.parametrize("drill, objective", [("failover", "rto_seconds"), ("backup-restore", "rto_seconds")])
def test_impossible_objective_makes_the_drill_failed_with_evidence(drills: LabProject, tmp_path: Path, drill: str,
                                                                    objective: str) -> None:
    env = strict_environment(drills, "strict", **{objective: 0.0001})
    result, record, bundle = run(drills, tmp_path, drill, *live(drill), env=env)
    assert result.code == 1
    assert record["status"] == "failed", record["reason"]  # measured and missed: failed, not error
    assert "objective missed" in record["reason"] and f"FAILED {drill} on strict" in result.stdout
    missed = [m for m in record["measures"] if m["verdict"] == "missed"]
    assert missed and all(m["objective"] == objective and m["objective_value"] == 0.0001 for m in missed)
    assert record["objectives"][objective] == 0.0001
    assert [c["status"] for c in record["cleanups"]] == ["passed"] * len(record["cleanups"])
    assert {p.name for p in bundle.iterdir()} >= {"record.json", "notebook.ipynb", "notebook.html", "MANIFEST",
                                                  "attachments"}
    assert "drillbook: this run ended `failed`" in (bundle / "notebook.ipynb").read_text()
    assert cli(drills.root, "verify", env={"DRILLBOOK_ARCHIVE": str(tmp_path / "archive")}).code == 0
    assert_healthy(drills)


@pytest.mark.integration
def test_drill_errors_when_the_standby_is_down_runs_cleanups_and_lab_up_recovers(drills: LabProject,
                                                                                 tmp_path: Path) -> None:
    with drills.postgres() as pg:
        standby = pg.replication.standbys()[0]
        pg.servers.stop(standby, "fast")
    before = lab_state(drills)
    result, record, _ = run(drills, tmp_path, "failover", *live("failover"))
    assert result.code == 1 and record["status"] == "error"
    assert record["reason"].startswith("NotSteady: steady state not met") and "drillbook lab up" in record["reason"]
    assert not checks(record)["a standby streams from the primary"]["passed"]
    assert [s["title"] for s in record["steps"]] == ["Read every node's role, timeline and lag"]  # no fault injected
    assert record["cleanups"] and all(c["status"] == "passed" for c in record["cleanups"])
    assert lab_state(drills) == before  # the drill changed nothing
    up = cli(drills.root, "lab", "up")
    assert up.code == 0, up.output
    assert_healthy(drills)


@pytest.mark.integration
def test_drill_that_errors_after_the_fault_restores_the_pair_in_its_cleanup(drills: LabProject, tmp_path: Path) -> None:
    with drills.postgres() as pg:
        primary = pg.replication.primary()
    result, record, bundle = run(drills, tmp_path, "failover", "--approve", "fault")  # the runbook may not promote
    assert result.code == 1 and record["status"] == "error"
    assert "runbook postgres-failover ended error" in record["reason"] and "promote" in record["reason"]
    assert next(s for s in record["steps"] if s["title"].startswith("Crash"))["status"] == "passed"
    assert {c["title"]: c["status"] for c in record["cleanups"]} == {
        f"make the pair healthy again (restart or rebuild {primary})": "passed",
        "stop runbook postgres-failover if it is still running": "passed",  # started ahead of the fault
        "stop the writer and the probe": "passed", "close connections to postgres": "passed"}
    assert "GateNotApproved" in (bundle / "attachments" / "postgres-failover.ipynb").read_text()
    assert_healthy(drills)  # the cleanup restarted the crashed primary: no `lab up` needed
    with drills.postgres() as pg:
        assert pg.replication.primary() == primary


@pytest.mark.integration
def test_ssh_rotation_is_not_applicable_without_the_ssh_host(drills: LabProject, tmp_path: Path) -> None:
    data = yaml.safe_load((drills.root / "parameters" / "environments" / "local.yaml").read_text())
    data["hosts"]["lab-ssh"].update(optional=True, port=free_ports(1)[0])  # nothing listens there
    (drills.root / "parameters" / "environments" / "nossh.yaml").write_text(yaml.safe_dump(data))
    result, record, _ = run(drills, tmp_path, "key-rotation", "--dry-run", env="nossh")
    assert result.code == 0, result.output
    absent = [s for s in record["steps"] if s["status"] == "not-applicable"]
    assert [s["title"] for s in absent] == ["SSH key rotation"]
    assert "cannot reach" in absent[0]["detail"] and "lab-ssh" in absent[0]["detail"]
    assert "runbook rotate-ssh-key passed" not in checks(record)  # never run, never claimed
    assert record["attachments"] == ["attachments/rotate-db-credentials.ipynb", "attachments/rotate-tls-certificate.ipynb"]
