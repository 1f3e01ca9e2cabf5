"""The embedded lab: configuration (unit) and the real lab (integration: PostgreSQL, sshd, the CLI)."""
from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path

import psycopg
import pytest
from conftest import Project, cli
from drillbook.config import environments
from drillbook.errors import LabError
from drillbook.lab import control
from drillbook.lab.binaries import (
    REQUIRED_TOOLS,
    binary_candidates,
    choose_binaries,
    select_binaries,
    supports_tls,
    wheel_binaries,
)
from drillbook.lab.environment import environment_data, environment_yaml
from drillbook.lab.oslevel import lab_user, port_open
from drillbook.lab.pg import SAMPLE_ROWS, render_hba, render_server_conf
from drillbook.lab.sshd import known_hosts_line, render_sshd_config
from drillbook.lab.state import NODES, LabPaths, LabPorts, LabState
from drillbook.pki import issue_server_certificate, make_ca
from drillbook.targets.postgres.backup import table_checksums
from drillbook.targets.postgres.conventions import choose_bin_dir
from drillbook.targets.postgres.results import PostgresError
from labsupport import REPO, LabProject, free_ports, lab_base, lab_project, make_project, require_sshd  # noqa: F401


# ============================================================================= unit
def test_ports_from_options_then_environment_then_defaults() -> None:
    assert LabPorts.from_env({}) == LabPorts(55432, 55433, 55422)
    env = {"DRILLBOOK_LAB_PG1_PORT": "6001", "DRILLBOOK_LAB_SSH_PORT": "6003"}
    assert LabPorts.from_env(env) == LabPorts(6001, 55433, 6003)
    assert LabPorts.from_env(env, pg1=7001) == LabPorts(7001, 55433, 6003)


@pytest.mark.parametrize("env, message", [
    ({"DRILLBOOK_LAB_PG1_PORT": "abc"}, "not a port number"),
    ({"DRILLBOOK_LAB_PG2_PORT": "80"}, "out of range"),
    ({"DRILLBOOK_LAB_PG1_PORT": "6000", "DRILLBOOK_LAB_PG2_PORT": "6000"}, "must differ"),
])
def test_bad_ports_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(LabError, match=message) as info:
        LabPorts.from_env(env)
    assert "\n" not in info.value.message


def fake_bin(root: Path, major: int, tools: tuple[str, ...] = REQUIRED_TOOLS, tls: bool = True) -> Path:
    """A directory of stand-in PostgreSQL tools that only print their version (and configure flags)."""
    directory = root / str(major) / "bin"
    directory.mkdir(parents=True)
    for tool in tools:
        path = directory / tool
        path.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) {major}.3 (test)'\n")
        path.chmod(0o755)
    config = directory / "pg_config"
    flags = "'--prefix=/x'" + (" '--with-openssl'" if tls else "")
    config.write_text(f'#!/bin/sh\necho "{flags}"\n')
    config.chmod(0o755)
    return directory


def test_binary_discovery_prefers_the_highest_complete_system_version(tmp_path: Path) -> None:
    fake_bin(tmp_path, 14)
    sixteen = fake_bin(tmp_path, 16)
    fake_bin(tmp_path, 17, tools=("pg_ctl", "postgres"))  # incomplete: no initdb, pg_rewind…
    found = binary_candidates(pg_config=None, pattern=str(tmp_path / "*" / "bin"), wheel=False)
    assert found == [(16, str(sixteen)), (14, str(tmp_path / "14" / "bin"))]
    assert choose_binaries(found, want=None) == str(sixteen)
    assert choose_binaries(found, want=14) == str(tmp_path / "14" / "bin")  # existing data decides
    assert choose_binaries(found, want=13) is None
    assert choose_binaries([], want=None) is None


def test_binaries_without_tls_are_never_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = fake_bin(tmp_path, 16, tls=False)
    assert not supports_tls(plain) and supports_tls(fake_bin(tmp_path, 15))
    monkeypatch.setattr("drillbook.lab.binaries.binary_candidates", lambda: [(16, str(plain))])
    paths = LabPaths(tmp_path / "project")
    paths.root.mkdir(parents=True)
    with pytest.raises(LabError, match="cannot serve TLS") as info:
        select_binaries(paths, LabState(LabPorts(), "someone"))
    assert "apt-get install postgresql" in info.value.hint


def test_the_pgserver_wheel_is_the_fallback() -> None:
    wheel = wheel_binaries()
    assert wheel is not None and wheel[0] >= 16 and Path(wheel[1], "pg_rewind").is_file()
    assert binary_candidates(pg_config=None, pattern="/nonexistent/*/bin") == [wheel]


def test_choose_bin_dir_matches_pg_version() -> None:
    candidates = [(15, "/a"), (16, "/b")]
    assert choose_bin_dir(candidates, None) == "/b"
    assert choose_bin_dir(candidates, 15) == "/a"
    assert choose_bin_dir(candidates, 12) is None


def test_server_configuration_is_tls_scram_loopback(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path)
    conf = render_server_conf(paths)
    assert "ssl = on" in conf and "listen_addresses = '127.0.0.1'" in conf
    assert f"ssl_key_file = '{paths.tls / 'server.key'}'" in conf
    assert conf.strip().splitlines()[-1].startswith("include_if_exists = 'drillbook.node.conf'")  # node settings win
    hba = [line.split() for line in render_hba("replicator").splitlines() if line and not line.startswith("#")]
    assert all(row[-1] in ("scram-sha-256", "reject") for row in hba)
    assert ["hostnossl", "all", "all", "0.0.0.0/0", "reject"] in hba
    assert not any(row[0] in ("local", "host") for row in hba)  # TLS or nothing


def test_sshd_configuration_is_loopback_keys_only(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path)
    conf = render_sshd_config(paths, 60022, "someone").splitlines()
    for line in ("Port 60022", "ListenAddress 127.0.0.1", "PasswordAuthentication no", "AllowUsers someone",
                 "KbdInteractiveAuthentication no", f'PidFile "{paths.ssh / "sshd.pid"}"',
                 f'AuthorizedKeysFile "{paths.ssh / "authorized_keys"}"'):
        assert line in conf


def test_known_hosts_lines() -> None:
    assert known_hosts_line("127.0.0.1", 2222, "ssh-ed25519 AAAAC3 host") == "[127.0.0.1]:2222 ssh-ed25519 AAAAC3"
    assert known_hosts_line("db1", 22, "ssh-ed25519 AAAAC3") == "db1 ssh-ed25519 AAAAC3"


def test_lab_ca_issues_verifiable_server_certificates() -> None:
    from cryptography import x509

    ca_pem, ca_key = make_ca()
    cert_pem, key_pem = issue_server_certificate(ca_pem, ca_key, ["127.0.0.1", "localhost"])
    ca, cert = x509.load_pem_x509_certificate(ca_pem.encode()), x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert "PRIVATE KEY" in key_pem
    other_ca, _ = make_ca()
    with pytest.raises(Exception):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other_ca.encode()))


def test_the_committed_local_environment_describes_the_default_lab() -> None:
    committed = environments.load_environment("local", REPO)
    implied = environments.validate_environment(environment_data(LabPorts()), REPO / "x" / "local.yaml")
    assert committed.hosts == implied.hosts
    assert committed.services == implied.services
    for name in ("rto_seconds", "rpo_seconds", "failed_probes", "backup_age_seconds"):
        assert name in committed.objectives
    assert "smoke" in committed.parameters


def test_environment_model_validates_the_new_fields(project: Project) -> None:
    from drillbook.errors import ConfigError

    text = environment_yaml(LabPorts())
    project.write_env("local", text.replace("replication_password: file:", "replication_password: plain:"))
    with pytest.raises(ConfigError, match="replication_password"):
        environments.load_environment("local", project.root)
    project.write_env("local", text.replace("user: file:.lab/secrets/app_user", "user: env:APP_USER"))
    with pytest.raises(ConfigError, match="user"):
        environments.load_environment("local", project.root)
    project.write_env("local", text)
    refs = environments.load_environment("local", project.root).secret_refs()
    assert {"services.postgres.replication_password", "services.postgres.ca_key", "hosts.lab-ssh.key"} <= set(refs)


def test_running_against_the_lab_before_it_is_up_says_to_start_it(project: Project) -> None:
    project.write_env("local", environment_yaml(LabPorts()))
    project.add_notebook("passes.ipynb")
    result = cli(project, "run", "passes", "--env", "local")
    assert result.code == 2, result.output
    assert "drillbook lab up" in result.stderr and "Traceback" not in result.output
    assert not project.run_dirs()


def test_status_without_a_lab(project: Project) -> None:
    result = cli(project, "lab", "status")
    assert result.code == 2 and "no lab in" in result.stderr and "hint: drillbook lab up" in result.stderr


# ============================================================================= integration
def node_pid(lab_project: LabProject, name: str) -> int:
    return int((lab_project.paths.node(name) / "postmaster.pid").read_text().split()[0])


@pytest.mark.integration
def test_up_gives_a_streaming_pair_with_tls_and_the_sample_data(lab_project: LabProject) -> None:
    report = control.status(lab_project.root)
    assert report.healthy, report
    assert sorted(n.role for n in report.nodes) == ["primary", "standby"]
    standby = next(n for n in report.nodes if n.role == "standby")
    assert standby.streaming and standby.upstream_port == next(n.port for n in report.nodes if n.role == "primary")
    assert report.warnings == []
    with lab_project.postgres() as pg, pg.connections.connect() as conn:
        assert conn.info.port in (lab_project.ports.pg1, lab_project.ports.pg2)
        assert conn.pgconn.ssl_in_use
        counts = {t: s.rows for t, s in table_checksums(conn).items()}
        assert counts == SAMPLE_ROWS and sum(counts.values()) == 66000
        assert conn.execute("SELECT current_user").fetchone()[0] == "app"  # objects belong to the group role


@pytest.mark.integration
def test_clients_need_tls_and_the_right_password(lab_project: LabProject) -> None:
    with lab_project.postgres() as pg:
        creds = pg.connections.credentials("app")
        port = lab_project.ports.pg1
        with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry|reject"):
            psycopg.connect(host="127.0.0.1", port=port, user=creds.user, password=creds.password, dbname="app",
                            sslmode="disable", connect_timeout=3)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            pg.connections.connect("pg1", password="wrong-password")
        ca_pem, _ = make_ca("another CA")
        other = lab_project.root / "other-ca.crt"
        other.write_text(ca_pem)
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(host="127.0.0.1", port=port, user=creds.user, password=creds.password, dbname="app",
                            sslmode="verify-full", sslrootcert=str(other), connect_timeout=3)


@pytest.mark.integration
def test_secrets_are_private_and_servers_run_unprivileged(lab_project: LabProject) -> None:
    paths = lab_project.paths
    for name in ("admin_password", "replication_password", "app_password", "app_user"):
        assert stat.S_IMODE(paths.secret(name).stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.secrets.stat().st_mode) == 0o700
    assert stat.S_IMODE((paths.ca / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((paths.ssh / "client_key").stat().st_mode) == 0o600
    for name in NODES:
        owner = Path(f"/proc/{node_pid(lab_project, name)}").stat().st_uid
        assert pwd.getpwuid(owner).pw_name == lab_user()
        if os.geteuid() == 0:
            assert owner != 0
    password = paths.secret("admin_password").read_text().strip()
    for log in paths.data.glob("*.log"):
        assert password not in log.read_text(errors="replace")


@pytest.mark.integration
def test_up_again_is_idempotent_and_fast(lab_project: LabProject) -> None:
    before = control.status(lab_project.root)
    pids = {n: node_pid(lab_project, n) for n in NODES}
    t0 = time.monotonic()
    result = cli(lab_project.root, "lab", "up")
    seconds = time.monotonic() - t0
    assert result.code == 0, result.output
    assert seconds < 10, f"warm lab up took {seconds:.1f} s"
    assert "lab: healthy" in result.stdout and "lab:" not in result.stderr  # nothing to repair, nothing said
    assert {n: node_pid(lab_project, n) for n in NODES} == pids  # nothing restarted
    assert [(n.name, n.role) for n in control.status(lab_project.root).nodes] == [(n.name, n.role) for n in before.nodes]


@pytest.mark.integration
def test_up_starts_a_stopped_standby(lab_project: LabProject) -> None:
    with lab_project.postgres() as pg:
        standby = pg.replication.standbys()[0]
        pg.servers.stop(standby, "immediate")
        assert pg.replication.role(standby) == "down"
    status = cli(lab_project.root, "lab", "status")
    assert status.code == 1 and "not healthy" in status.stdout and "down" in status.stdout
    up = cli(lab_project.root, "lab", "up")
    assert up.code == 0, up.output
    assert f"starting {standby}" in up.stderr
    assert control.status(lab_project.root).healthy


@pytest.mark.integration
def test_up_after_a_failover_keeps_the_new_primary_and_rebuilds_the_old(lab_project: LabProject) -> None:
    with lab_project.postgres() as pg:
        old, new = pg.replication.primary(), pg.replication.standbys()[0]
        with pg.connections.connect(old, login="admin", dbname="app") as conn:
            sums = table_checksums(conn)
        pg.replication.wait_caught_up(new)
        pg.servers.stop(old)
        pg.servers.fence(old)
        pg.servers.promote(new)
    up = cli(lab_project.root, "lab", "up")
    assert up.code == 0, up.output
    assert "fenced" in up.stderr and ("(pg_rewind)" in up.stderr or "(follow)" in up.stderr)
    with lab_project.postgres() as pg:
        assert pg.replication.roles() == {new: "primary", old: "standby"}
        assert not pg.servers.is_fenced(old)
        with pg.connections.connect(old, login="admin", dbname="app") as conn:
            assert table_checksums(conn) == sums


@pytest.mark.integration
def test_down_stops_everything_and_keeps_the_data(lab_project: LabProject) -> None:
    require_sshd()
    ports = lab_project.ports
    with lab_project.postgres() as pg:  # a drill left a scratch instance running
        backup = pg.backups.base_backup()
        scratch_port = free_ports(1)[0]
        scratch = pg.backups.restore_scratch(backup, port=scratch_port, name="left-behind")
        assert port_open(scratch_port)
    down = cli(lab_project.root, "lab", "down")
    assert down.code == 0, down.output
    assert "stopped sshd" in down.stdout and "stopped scratch instance left-behind" in down.stdout
    for port in (ports.pg1, ports.pg2, ports.ssh, scratch_port):
        assert not port_open(port)
    assert (lab_project.paths.node("pg1") / "PG_VERSION").exists() and lab_project.paths.secret("app_password").exists()
    assert cli(lab_project.root, "lab", "status").code == 1
    up = cli(lab_project.root, "lab", "up")
    assert up.code == 0, up.output
    assert control.status(lab_project.root).healthy
    with lab_project.postgres() as pg:  # leave the shared lab as clean as the drills expect it
        pg.servers.run(scratch.node, f"rm -rf {scratch.data_dir} {scratch.data_dir}.log",
                       what="remove the stopped scratch")
        pg.backups.remove_backup(backup)


@pytest.mark.integration
def test_lab_up_refuses_to_change_ports_of_an_existing_lab(lab_project: LabProject) -> None:
    result = cli(lab_project.root, "lab", "up", "--pg1-port", str(free_ports(1)[0]))
    assert result.code == 2
    assert "already uses ports" in result.stderr and "--purge" in result.stderr


@pytest.mark.integration
def test_smoke_drill_passes_on_every_lab_host(lab_project: LabProject, tmp_path: Path) -> None:
    require_sshd()
    result = cli(lab_project.root, "run", "smoke", "--env", "local", env={"DRILLBOOK_ARCHIVE": str(tmp_path / "a")})
    assert result.code == 0, result.output
    import json

    record = json.loads(next((tmp_path / "a" / "runs").glob("*/record.json")).read_text())
    titles = [s["title"] for s in record["steps"] if s["status"] == "passed"]
    assert "Reach lab-ssh" in titles and "Reach lab" in titles


@pytest.mark.integration
def test_a_second_lab_on_chosen_ports_without_sshd_then_purge() -> None:
    base = lab_base()
    pg1, pg2, ssh, pgbouncer, redis = free_ports(5)
    root = make_project(base, LabPorts(55432, 55433, 55422))  # local.yaml deliberately disagrees
    env = {"DRILLBOOK_LAB_PG1_PORT": str(pg1), "DRILLBOOK_LAB_PG2_PORT": str(pg2),
           "DRILLBOOK_LAB_SSH_PORT": str(ssh), "DRILLBOOK_LAB_SSHD": "none",
           "DRILLBOOK_LAB_PGBOUNCER_PORT": str(pgbouncer), "DRILLBOOK_LAB_REDIS_PORT": str(redis)}
    try:
        up = cli(root, "lab", "up", env=env)
        assert up.code == 0, up.output
        assert "ssh: unavailable: disabled by DRILLBOOK_LAB_SSHD=none" in up.stdout
        assert f"the lab uses {pg1}" in up.stdout  # warns that local.yaml names other ports
        assert "lab: healthy" in up.stdout and not port_open(ssh)
        assert port_open(pg1) and port_open(pg2)
        purge = cli(root, "lab", "down", "--purge")
        assert purge.code == 0, purge.output
        assert not (root / ".lab").exists()
        assert not port_open(pg1) and not port_open(pg2) and not port_open(pgbouncer) and not port_open(redis)
    finally:
        if (root / ".lab").exists():
            control.down(root, purge=True)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.integration
def test_up_resolves_a_split_brain_in_favour_of_the_newest_primary(lab_project: LabProject) -> None:
    with lab_project.postgres() as pg:
        old, new = pg.replication.primary(), pg.replication.standbys()[0]
        pg.servers.stop(old, "fast")
        pg.servers.promote(new)
        pg.servers.start(old)  # the old primary restarted without fencing: two primaries
        assert pg.replication.roles() == {old: "primary", new: "primary"}
        with pytest.raises(PostgresError, match="split brain"):
            pg.replication.primary()
    up = cli(lab_project.root, "lab", "up")
    assert up.code == 0, up.output
    assert f"{old} is a second primary" in up.stderr
    with lab_project.postgres() as pg:
        assert pg.replication.roles() == {new: "primary", old: "standby"}
    assert control.status(lab_project.root).healthy
