"""drillbook.targets.postgres: pure helpers (unit) and every operation on the real lab (integration)."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import psycopg
import pytest

from drillbook import lab, measure
from drillbook.targets import postgres as pgt
from labsupport import LabProject, free_ports, lab_project  # noqa: F401


# ============================================================================= unit
def test_parse_lsn() -> None:
    assert pgt.parse_lsn("0/0") == 0
    assert pgt.parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert pgt.parse_lsn("1/0") - pgt.parse_lsn("0/FFFFFFFF") == 1


def test_conninfo_quotes_values() -> None:
    text = pgt.conninfo(host="127.0.0.1", port=5432, passfile="/a dir/it's", sslrootcert=None)
    assert text == "host='127.0.0.1' port='5432' passfile='/a dir/it\\'s'"
    assert psycopg.conninfo.conninfo_to_dict(text)["passfile"] == "/a dir/it's"


def test_node_conf_and_pgpass_escaping() -> None:
    conf = pgt.render_node_conf(5433, "host='h' user='u'")
    assert "port = 5433" in conf and "primary_conninfo = 'host=''h'' user=''u'''" in conf
    assert "primary_conninfo" not in pgt.render_node_conf(5432)
    assert pgt.pgpass_line("127.0.0.1", 5432, "rep", "a:b\\c") == "127.0.0.1:5432:*:rep:a\\:b\\\\c"


def test_alternate_logins() -> None:
    assert pgt.alternate_login("app_blue") == "app_green"
    assert pgt.alternate_login("app_green") == "app_blue"
    assert pgt.alternate_login("svc_a") == "svc_b"
    with pytest.raises(pgt.PostgresError, match="no alternate"):
        pgt.alternate_login("app")


def test_refusals_are_told_apart_from_a_node_that_is_down() -> None:
    assert pgt.is_refusal(Exception('FATAL:  password authentication failed for user "x"'))
    assert pgt.is_refusal(Exception("no pg_hba.conf entry for host"))
    assert not pgt.is_refusal(Exception("connection refused"))
    assert not pgt.is_refusal(Exception("FATAL:  the database system is starting up"))


# ============================================================================= integration
@pytest.fixture
def pg(lab_project: LabProject):
    with lab_project.postgres() as target:
        yield target


@pytest.mark.integration
def test_roles_states_and_lag(pg: pgt.Postgres) -> None:
    roles = pg.roles()
    assert sorted(roles.values()) == ["primary", "standby"]
    primary, standby = pg.primary(), pg.standbys()[0]
    assert roles[primary] == "primary" and pg.primary(exclude=standby) == primary
    state = pg.state(standby)
    assert state.streaming and state.upstream_port == pg.node(primary).port and state.timeline >= 1
    with pg.connect() as conn:  # writes some WAL the standby must replay
        conn.execute("CREATE TEMP TABLE t AS SELECT generate_series(1, 1000) AS i")
    pg.wait_caught_up(standby)
    assert pg.lag(standby).bytes == 0


@pytest.mark.integration
def test_commands_run_as_the_owner_of_the_data_directory(pg: pgt.Postgres) -> None:
    assert pg.run("pg1", "id -un", what="whoami").stdout.strip() == lab.lab_user()
    with pytest.raises(pgt.PostgresError, match=r"false-thing failed on postgres/pg1 \(exit 3\): boom"):
        pg.run("pg1", "echo boom >&2; exit 3", what="false-thing")


@pytest.mark.integration
def test_primary_connections_follow_the_writable_node(pg: pgt.Postgres) -> None:
    with pg.connect() as conn:
        assert conn.info.port == pg.node(pg.primary()).port
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    with pg.connect(pg.standbys()[0]) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TEMP SEQUENCE s; CREATE TABLE drillbook.nope (x int)")


@pytest.mark.integration
def test_checksums_see_any_change_and_match_on_the_standby(pg: pgt.Postgres) -> None:
    with pg.connect(autocommit=False) as conn:
        before = pgt.table_checksums(conn)
        assert {t: s.rows for t, s in before.items()} == lab.SAMPLE_ROWS
        conn.execute("UPDATE products SET title = title || '!' WHERE id = 500")
        changed = pgt.table_checksums(conn)
        assert changed["products"].md5 != before["products"].md5 and changed["products"].rows == 1000
        assert changed["orders"] == before["orders"]
        conn.rollback()
        assert pgt.table_checksums(conn) == before
    standby = pg.standbys()[0]
    pg.wait_caught_up(standby)
    with pg.connect(standby) as conn:
        assert pgt.table_checksums(conn) == before


@pytest.mark.integration
def test_failover_measured_then_rebuilt(pg: pgt.Postgres, lab_project: LabProject) -> None:
    """Fault → fence → promote under load; RTO/RPO measured; the fenced node cannot come back as primary."""
    old, new = pg.primary(), pg.standbys()[0]
    load = measure.Load(writer=pg.connector(), probe=pg.connector(), run="test-failover").start()
    try:
        load.wait_steady()
        pg.wait_caught_up(new)
        fault = load.mark("fault")
        pg.stop(old, "immediate")
        pg.fence(old, "test failover")
        promote_seconds = pg.promote(new)
        load.wait_for_write_after(fault, timeout=30)
        time.sleep(0.2)
    finally:
        load.stop()
    with pg.connect() as conn:
        outcome = load.outcome(fault, conn)
        load.purge(conn)
    assert outcome.new_node == f"127.0.0.1:{pg.node(new).port}"
    assert 0 < outcome.rto_seconds < 10 and promote_seconds < outcome.rto_seconds + 1
    assert outcome.rpo_writes >= 0 and outcome.failed_probes >= 1  # the primary really went away
    assert outcome.probe_resolution_seconds <= 0.1
    assert pg.is_fenced(old) and pg.role(old) == "down"
    pg.start(old)  # a fenced node starts read-only: it cannot be a second primary
    assert pg.role(old) == "standby" and pg.primary() == new
    assert pg.rebuild_standby(old) in ("pg_rewind", "follow")  # never a full re-clone here
    assert pg.roles() == {old: "standby", new: "primary"} and not pg.is_fenced(old)
    assert pg.state(old).streaming


@pytest.mark.integration
def test_rebuild_by_reclone(pg: pgt.Postgres) -> None:
    standby = pg.standbys()[0]
    assert pg.rebuild_standby(standby, method="clone") == "pg_basebackup"
    assert pg.state(standby).streaming
    assert not Path(pg.data_dir(standby) + ".old").exists()


@pytest.mark.integration
def test_backup_restores_into_a_scratch_instance_that_is_then_removed(pg: pgt.Postgres) -> None:
    backup = pg.base_backup()
    try:
        assert backup.size_bytes > 1_000_000 and 0 < backup.seconds < 60 and backup.age() >= 0
        port = free_ports(1)[0]
        with pg.restore_scratch(backup, port=port) as scratch:
            assert scratch.restore_seconds > 0
            with scratch.connect(dbname="app") as restored, pg.connect() as source:
                assert pgt.table_checksums(restored) == pgt.table_checksums(source)
                assert restored.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert not Path(scratch.data_dir).exists() and not lab._port_open(port)
    finally:
        pg.remove_backup(backup)
    assert not Path(backup.path).exists()


@pytest.mark.integration
def test_credential_rotation_with_zero_failed_probes(pg: pgt.Postgres, lab_project: LabProject) -> None:
    paths = lab_project.paths
    before = pg.credentials("app")
    load = measure.Load(writer=None, probe=pg.connector(), run="rotation").start()
    try:
        load.wait_steady()
        rotation = pg.rotate_app_credentials()
        time.sleep(0.3)
        pg.retire_login(rotation.old_user, grace=0.5)
        time.sleep(0.3)
    finally:
        load.stop()
    after = pg.credentials("app")
    assert rotation.old_user == before.user and after.user == rotation.new_user != before.user
    assert after.password != before.password
    assert measure.failed_probes(load.probes) == 0 and len(load.probes) > 10
    for name in ("app_password", "app_user"):
        assert stat.S_IMODE(paths.secret(name).stat().st_mode) == 0o600
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in|password authentication failed"):
        pg.connect(user=before.user, password=before.password)
    with pytest.raises(pgt.PostgresError, match="current login role"):
        pg.retire_login(after.user, grace=0)
    with pg.connect() as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (after.user, "app")


@pytest.mark.integration
def test_up_repairs_an_app_password_that_does_not_match(pg: pgt.Postgres, lab_project: LabProject) -> None:
    user = pg.credentials("app").user
    pg.set_password(user, "something-else-entirely")
    with pytest.raises(psycopg.OperationalError):
        pg.connect()
    lab.up(lab_project.root)
    with pg.connect() as conn:
        assert conn.execute("SELECT session_user").fetchone()[0] == user


@pytest.mark.integration
def test_tls_certificate_rotation_is_served_after_reload(pg: pgt.Postgres) -> None:
    before = {n: pg.served_certificate(n) for n in pg.node_names}
    assert all(c.verified for c in before.values())
    cert, key = pg.issue_server_certificate(days=30)
    for name in pg.node_names:
        pg.install_server_certificate(name, cert, key)
        pg.reload(name)
    deadline = time.monotonic() + 10
    while any(pg.served_certificate(n).sha256 == before[n].sha256 for n in pg.node_names):
        assert time.monotonic() < deadline, "the new certificate was not served after reload"
        time.sleep(0.1)
    after = {n: pg.served_certificate(n) for n in pg.node_names}
    assert all(c.verified and c.serial != before[n].serial for n, c in after.items())
    with pg.connect() as conn:  # clients verifying against the CA keep working
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.integration
def test_served_certificate_reports_an_unverifiable_one(pg: pgt.Postgres, tmp_path: Path) -> None:
    other, _ = lab.make_ca("not the lab CA")
    (tmp_path / "ca.crt").write_text(other)
    node = pg.node("pg1")
    cert = pgt.fetch_served_certificate(node.address, node.port, str(tmp_path / "ca.crt"))
    assert not cert.verified and cert.error and len(cert.sha256) == 64


@pytest.mark.integration
def test_binaries_come_from_the_environment_or_are_found_by_pg_version(lab_project: LabProject) -> None:
    with lab_project.postgres() as target:
        assert os.path.realpath(target.bin_dir("pg1")) == os.path.realpath(lab_project.paths.bin)
        service = target.service.model_copy(update={"bin_dir": None})
    found = pgt.Postgres(service, shell=target._open_shell, secret=target._secret, project=lab_project.root)
    with found:
        version = Path(found.data_dir("pg1"), "PG_VERSION").read_text().strip()
        assert lab.pg_major(Path(found.bin_dir("pg1"))) == int(version)
