"""drillbook.targets.postgres: pure helpers (unit) and every operation on the real lab (integration)."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import psycopg
import pytest
from drillbook.lab import control
from drillbook.lab.binaries import pg_major
from drillbook.lab.oslevel import lab_user, port_open
from drillbook.lab.pg import SAMPLE_ROWS
from drillbook.measure.compute import failed_probes
from drillbook.measure.load import Load
from drillbook.pki import make_ca
from drillbook.targets.postgres import Postgres
from drillbook.targets.postgres.backup import table_checksums
from drillbook.targets.postgres.conventions import conninfo, is_refusal, parse_lsn, pgpass_line, render_node_conf
from drillbook.targets.postgres.results import PostgresError
from drillbook.targets.postgres.rotation import alternate_login, fetch_served_certificate
from labsupport import LabProject, free_ports, lab_project  # noqa: F401


# ============================================================================= unit
def test_parse_lsn() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert parse_lsn("1/0") - parse_lsn("0/FFFFFFFF") == 1


def test_conninfo_quotes_values() -> None:
    text = conninfo(host="127.0.0.1", port=5432, passfile="/a dir/it's", sslrootcert=None)
    assert text == "host='127.0.0.1' port='5432' passfile='/a dir/it\\'s'"
    assert psycopg.conninfo.conninfo_to_dict(text)["passfile"] == "/a dir/it's"


def test_node_conf_and_pgpass_escaping() -> None:
    conf = render_node_conf(5433, "host='h' user='u'")
    assert "port = 5433" in conf and "primary_conninfo = 'host=''h'' user=''u'''" in conf
    assert "primary_conninfo" not in render_node_conf(5432)
    assert pgpass_line("127.0.0.1", 5432, "rep", "a:b\\c") == "127.0.0.1:5432:*:rep:a\\:b\\\\c"


def test_alternate_logins() -> None:
    assert alternate_login("app_blue") == "app_green"
    assert alternate_login("app_green") == "app_blue"
    assert alternate_login("svc_a") == "svc_b"
    with pytest.raises(PostgresError, match="no alternate"):
        alternate_login("app")


def test_refusals_are_told_apart_from_a_node_that_is_down() -> None:
    assert is_refusal(Exception('FATAL:  password authentication failed for user "x"'))
    assert is_refusal(Exception("no pg_hba.conf entry for host"))
    assert not is_refusal(Exception("connection refused"))
    assert not is_refusal(Exception("FATAL:  the database system is starting up"))


# ============================================================================= integration
@pytest.fixture
def pg(lab_project: LabProject):
    with lab_project.postgres() as target:
        yield target


@pytest.mark.integration
def test_roles_states_and_lag(pg: Postgres) -> None:
    roles = pg.replication.roles()
    assert sorted(roles.values()) == ["primary", "standby"]
    primary, standby = pg.replication.primary(), pg.replication.standbys()[0]
    assert roles[primary] == "primary" and pg.replication.primary(exclude=standby) == primary
    state = pg.replication.state(standby)
    assert state.streaming and state.upstream_port == pg.context.node(primary).port and state.timeline >= 1
    with pg.connections.connect() as conn:  # writes some WAL the standby must replay
        conn.execute("CREATE TEMP TABLE t AS SELECT generate_series(1, 1000) AS i")
    pg.replication.wait_caught_up(standby)
    assert pg.replication.lag(standby).bytes == 0


@pytest.mark.integration
def test_commands_run_as_the_owner_of_the_data_directory(pg: Postgres) -> None:
    assert pg.servers.run("pg1", "id -un", what="whoami").stdout.strip() == lab_user()
    with pytest.raises(PostgresError, match=r"false-thing failed on postgres/pg1 \(exit 3\): boom"):
        pg.servers.run("pg1", "echo boom >&2; exit 3", what="false-thing")


@pytest.mark.integration
def test_primary_connections_follow_the_writable_node(pg: Postgres) -> None:
    with pg.connections.connect() as conn:
        assert conn.info.port == pg.context.node(pg.replication.primary()).port
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    with pg.connections.connect(pg.replication.standbys()[0]) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TEMP SEQUENCE s; CREATE TABLE drillbook.nope (x int)")


@pytest.mark.integration
def test_checksums_see_any_change_and_match_on_the_standby(pg: Postgres) -> None:
    with pg.connections.connect(autocommit=False) as conn:
        before = table_checksums(conn)
        assert {t: s.rows for t, s in before.items()} == SAMPLE_ROWS
        conn.execute("UPDATE products SET title = title || '!' WHERE id = 500")
        changed = table_checksums(conn)
        assert changed["products"].md5 != before["products"].md5 and changed["products"].rows == 1000
        assert changed["orders"] == before["orders"]
        conn.rollback()
        assert table_checksums(conn) == before
    standby = pg.replication.standbys()[0]
    pg.replication.wait_caught_up(standby)
    with pg.connections.connect(standby) as conn:
        assert table_checksums(conn) == before


@pytest.mark.integration
def test_failover_measured_then_rebuilt(pg: Postgres, lab_project: LabProject) -> None:
    """Fault → fence → promote under load; RTO/RPO measured; the fenced node cannot come back as primary."""
    old, new = pg.replication.primary(), pg.replication.standbys()[0]
    load = Load(writer=pg.connections.connector(), probe=pg.connections.connector(), run="test-failover").start()
    try:
        load.wait_steady()
        pg.replication.wait_caught_up(new)
        fault = load.mark("fault")
        pg.servers.stop(old, "immediate")
        pg.servers.fence(old, "test failover")
        promote_seconds = pg.servers.promote(new)
        load.wait_for_write_after(fault, timeout=30)
        time.sleep(0.2)
    finally:
        load.stop()
    with pg.connections.connect() as conn:
        outcome = load.outcome(fault, conn)
        load.purge(conn)
    assert outcome.new_node == f"127.0.0.1:{pg.context.node(new).port}"
    assert 0 < outcome.rto_seconds < 10 and promote_seconds < outcome.rto_seconds + 1
    assert outcome.rpo_writes >= 0 and outcome.failed_probes >= 1  # the primary really went away
    assert outcome.probe_resolution_seconds <= 0.1
    assert pg.servers.is_fenced(old) and pg.replication.role(old) == "down"
    pg.servers.start(old)  # a fenced node starts read-only: it cannot be a second primary
    assert pg.replication.role(old) == "standby" and pg.replication.primary() == new
    assert pg.replication.rebuild_standby(old) in ("pg_rewind", "follow")  # never a full re-clone here
    assert pg.replication.roles() == {old: "standby", new: "primary"} and not pg.servers.is_fenced(old)
    assert pg.replication.state(old).streaming


@pytest.mark.integration
def test_rebuild_by_reclone(pg: Postgres) -> None:
    standby = pg.replication.standbys()[0]
    assert pg.replication.rebuild_standby(standby, method="clone") == "pg_basebackup"
    assert pg.replication.state(standby).streaming
    assert not Path(pg.context.data_dir(standby) + ".old").exists()


@pytest.mark.integration
def test_backup_restores_into_a_scratch_instance_that_is_then_removed(pg: Postgres) -> None:
    backup = pg.backups.base_backup()
    try:
        assert backup.size_bytes > 1_000_000 and 0 < backup.seconds < 60 and backup.age() >= 0
        port = free_ports(1)[0]
        with pg.backups.restore_scratch(backup, port=port) as scratch:
            assert scratch.restore_seconds > 0
            with scratch.connect(dbname="app") as restored, pg.connections.connect() as source:
                assert table_checksums(restored) == table_checksums(source)
                assert restored.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert not Path(scratch.data_dir).exists() and not port_open(port)
    finally:
        pg.backups.remove_backup(backup)
    assert not Path(backup.path).exists()


@pytest.mark.integration
def test_credential_rotation_with_zero_failed_probes(pg: Postgres, lab_project: LabProject) -> None:
    paths = lab_project.paths
    before = pg.connections.credentials("app")
    load = Load(writer=None, probe=pg.connections.connector(), run="rotation").start()
    try:
        load.wait_steady()
        rotation = pg.rotation.rotate_app_credentials()
        time.sleep(0.3)
        pg.rotation.retire_login(rotation.old_user, grace=0.5)
        time.sleep(0.3)
    finally:
        load.stop()
    after = pg.connections.credentials("app")
    assert rotation.old_user == before.user and after.user == rotation.new_user != before.user
    assert after.password != before.password
    assert failed_probes(load.probes) == 0 and len(load.probes) > 10
    for name in ("app_password", "app_user"):
        assert stat.S_IMODE(paths.secret(name).stat().st_mode) == 0o600
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in|password authentication failed"):
        pg.connections.connect(user=before.user, password=before.password)
    with pytest.raises(PostgresError, match="current login role"):
        pg.rotation.retire_login(after.user, grace=0)
    with pg.connections.connect() as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (after.user, "app")


@pytest.mark.integration
def test_up_repairs_an_app_password_that_does_not_match(pg: Postgres, lab_project: LabProject) -> None:
    user = pg.connections.credentials("app").user
    pg.rotation.set_password(user, "something-else-entirely")
    with pytest.raises(psycopg.OperationalError):
        pg.connections.connect()
    control.up(lab_project.root)
    with pg.connections.connect() as conn:
        assert conn.execute("SELECT session_user").fetchone()[0] == user


@pytest.mark.integration
def test_tls_certificate_rotation_is_served_after_reload(pg: Postgres) -> None:
    before = {n: pg.rotation.served_certificate(n) for n in pg.context.node_names}
    assert all(c.verified for c in before.values())
    cert, key = pg.rotation.issue_server_certificate(days=30)
    for name in pg.context.node_names:
        pg.rotation.install_server_certificate(name, cert, key)
        pg.servers.reload(name)
    deadline = time.monotonic() + 10
    while any(pg.rotation.served_certificate(n).sha256 == before[n].sha256 for n in pg.context.node_names):
        assert time.monotonic() < deadline, "the new certificate was not served after reload"
        time.sleep(0.1)
    after = {n: pg.rotation.served_certificate(n) for n in pg.context.node_names}
    assert all(c.verified and c.serial != before[n].serial for n, c in after.items())
    with pg.connections.connect() as conn:  # clients verifying against the CA keep working
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.integration
def test_served_certificate_reports_an_unverifiable_one(pg: Postgres, tmp_path: Path) -> None:
    other, _ = make_ca("not the lab CA")
    (tmp_path / "ca.crt").write_text(other)
    node = pg.context.node("pg1")
    cert = fetch_served_certificate(node.address, node.port, str(tmp_path / "ca.crt"))
    assert not cert.verified and cert.error and len(cert.sha256) == 64


@pytest.mark.integration
def test_binaries_come_from_the_environment_or_are_found_by_pg_version(lab_project: LabProject) -> None:
    with lab_project.postgres() as target:
        assert os.path.realpath(target.servers.bin_dir("pg1")) == os.path.realpath(lab_project.paths.bin)
        service = target.context.service.model_copy(update={"bin_dir": None})
    found = Postgres(service, shell=target.context.open_shell, secret=target.context.secret, project=lab_project.root)
    with found:
        version = Path(found.context.data_dir("pg1"), "PG_VERSION").read_text().strip()
        assert pg_major(Path(found.servers.bin_dir("pg1"))) == int(version)
