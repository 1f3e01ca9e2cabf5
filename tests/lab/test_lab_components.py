"""The lab's PgBouncer, Redis and pg_stat_statements: started by `lab up`, described, stopped by `lab down`.

Real PgBouncer and Redis (Debian's packages) on the session lab's free ports. Under ``CI=true`` a
missing binary fails these tests instead of skipping them.
"""
from __future__ import annotations

import stat

import psycopg
import pytest
import redis as redislib
import yaml
from drillbook.config.environments import load_environment
from drillbook.lab import control
from drillbook.lab import pgbouncer as lab_pgbouncer
from drillbook.lab import redis as lab_redis
from drillbook.lab.environment import environment_data
from drillbook.lab.oslevel import port_open
from drillbook.lab.state import LabPorts
from drillbook.procedures import pool
from drillbook.targets.pgbouncer import PgBouncer, pool_size_in
from drillbook.targets.redis import Redis
from labsupport import REPO, LabProject, lab_project, require_components  # noqa: F401


# ============================================================================= unit
def test_local_yaml_describes_the_components_the_lab_starts() -> None:
    committed = yaml.safe_load((REPO / "parameters" / "environments" / "local.yaml").read_text())
    implied = environment_data(LabPorts())
    for name in ("pgbouncer", "redis"):
        assert committed["services"][name] == implied["services"][name]
    assert committed["services"]["pgbouncer"]["password"].startswith("file:")
    assert committed["services"]["redis"]["password"].startswith("file:")
    assert set(implied["objectives"]) <= set(committed["objectives"])


def test_ports_include_pgbouncer_and_redis_and_must_differ() -> None:
    ports = LabPorts.from_env({"DRILLBOOK_LAB_PGBOUNCER_PORT": "6101", "DRILLBOOK_LAB_REDIS_PORT": "6102"})
    assert (ports.pgbouncer, ports.redis) == (6101, 6102)
    with pytest.raises(Exception, match="must differ"):
        LabPorts.from_env({"DRILLBOOK_LAB_REDIS_PORT": str(LabPorts().pg1)})


def test_without_a_binary_the_component_is_unavailable_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRILLBOOK_LAB_PGBOUNCER", "none")
    monkeypatch.setenv("DRILLBOOK_LAB_REDIS", "/nonexistent/redis-server")
    assert lab_pgbouncer.binary() is None and lab_redis.binary() is None
    assert lab_pgbouncer.availability(None).startswith("unavailable")
    assert "is not an executable" in lab_redis.availability(None)


# ============================================================================= the real lab
def test_pgbouncer_pools_transactions_in_front_of_the_primary(lab_project: LabProject) -> None:  # noqa: F811
    require_components()
    assert control.status(lab_project.root).pgbouncer.startswith("running")
    bouncer = PgBouncer.from_environment(lab_project.env, lab_project.root)
    assert bouncer is not None and bouncer.missing() is None
    assert bouncer.setting("pool_mode") == "transaction"
    with bouncer.connect() as conn:  # TLS verified against the lab CA, through the pool
        user, port = conn.execute("SELECT session_user, inet_server_port()").fetchone()
    primary = lab_project.postgres().replication.primary()
    assert user == "app_pool" and port == lab_project.ports.of(primary)
    assert any(p.database == "app" for p in bouncer.pools())
    wrong = psycopg.ClientCursor
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=lab_project.ports.pgbouncer, dbname="pgbouncer",
                        user="pgbouncer_admin", password="not-the-secret", sslmode="require",
                        connect_timeout=3, cursor_factory=wrong)
    userlist = lab_project.paths.data / "pgbouncer" / "userlist.txt"
    assert stat.S_IMODE(userlist.stat().st_mode) == 0o600


def test_raising_the_pool_size_is_written_and_reloaded(lab_project: LabProject) -> None:  # noqa: F811
    require_components()
    bouncer = PgBouncer.from_environment(lab_project.env, lab_project.root)
    ini = lab_project.paths.data / "pgbouncer" / "pgbouncer.ini"
    before = bouncer.pool_size()
    try:
        bouncer.set_pool_size(before + 3)
        assert bouncer.pool_size() == before + 3  # what the running PgBouncer uses (SHOW CONFIG)
        assert pool_size_in(ini.read_text()) == before + 3  # and what a restart would read
    finally:
        bouncer.set_pool_size(before)
    assert bouncer.pool_size() == before


def test_pgbouncer_can_be_repointed_at_the_primary_after_a_failover(lab_project: LabProject) -> None:  # noqa: F811
    require_components()
    bouncer = PgBouncer.from_environment(lab_project.env, lab_project.root)
    with lab_project.postgres() as pg:
        primary, standby = pg.replication.primary(), pg.replication.standbys()[0]
        try:
            bouncer.point_at("127.0.0.1", lab_project.ports.of(standby))  # as if a failover happened behind its back
            assert bouncer.backend() == ("127.0.0.1", lab_project.ports.of(standby))
            ok, detail = pool.forwards_to_primary(pg, bouncer)
            assert not ok and primary in detail
            pool.repoint(pg, bouncer)
            assert pool.forwards_to_primary(pg, bouncer)[0]
        finally:
            bouncer.point_at("127.0.0.1", lab_project.ports.of(primary))
    with bouncer.connect() as conn:  # transactions through the pool reach a writable primary again
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_redis_needs_its_password_and_round_trips(lab_project: LabProject) -> None:  # noqa: F811
    require_components()
    cache = Redis.from_environment(lab_project.env, lab_project.root)
    assert cache is not None and cache.missing() is None
    assert cache.ping() == (True, "PONG")
    assert cache.round_trip() >= 0
    with redislib.Redis(host="127.0.0.1", port=lab_project.ports.redis, socket_timeout=2) as anonymous:
        with pytest.raises(redislib.AuthenticationError):
            anonymous.get("x")
    conf = lab_redis.config_path(lab_project.paths)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert cache.info()["tcp_port"] == lab_project.ports.redis


def test_pg_stat_statements_is_loaded_on_the_nodes(lab_project: LabProject) -> None:  # noqa: F811
    pg = lab_project.postgres()
    primary = pg.replication.primary()
    with pg.connections.connect(primary, login="admin", dbname="app") as conn:
        conn.execute("SELECT count(*) FROM customers")
        top = conn.execute("SELECT calls FROM pg_stat_statements WHERE query LIKE %s", ("%FROM customers%",)).fetchall()
    assert top and top[0][0] >= 1
    for node in pg.context.node_names:
        assert "pg_stat_statements" in pg.connections.query(node, "SHOW shared_preload_libraries")[0][0]


def test_lab_down_stops_them_and_up_starts_them_again(lab_project: LabProject) -> None:  # noqa: F811
    require_components()
    paths, ports = lab_project.paths, lab_project.ports
    control.down(lab_project.root)
    assert lab_pgbouncer.pid(paths) is None and lab_redis.pid(paths) is None
    assert not port_open(ports.pgbouncer) and not port_open(ports.redis)
    report = control.up(lab_project.root)
    assert report.healthy, report
    assert report.pgbouncer.startswith("running") and report.redis.startswith("running")
    env = load_environment("local", lab_project.root)
    assert Redis.from_environment(env, lab_project.root).ping()[0]
