"""The environment the lab implies: what ``local.yaml`` should say, the lab's service as a drill
target, and the warnings ``lab status`` gives when ``local.yaml`` says something else."""
from __future__ import annotations

from typing import Any

from ..config.environments import load_environment, validate_environment
from ..config.secrets import Redactor, SecretRef
from ..config.yamlfile import dump_yaml
from ..errors import DrillbookError
from ..shells.local import LocalShell
from ..targets.postgres import Postgres
from .pgbouncer import lab_service as lab_pgbouncer
from .redis import lab_service as lab_redis
from .state import LAB_ENV, LAB_USER, NODES, LabPaths, LabPorts, LabState


def environment_data(ports: LabPorts, ssh_user: str = LAB_USER) -> dict[str, Any]:
    """The environment (as in ``local.yaml``) that describes a lab on these ports."""
    node = lambda name: {"name": name, "host": "lab", "port": ports.of(name), "data_dir": f".lab/data/{name}"}  # noqa: E731
    return {
        "description": "Embedded local lab (PostgreSQL primary + standby, PgBouncer, Redis on 127.0.0.1, sshd on loopback)",
        "production": False,
        "hosts": {
            "lab": {"shell": "local"},
            "lab-ssh": {"shell": "ssh", "address": "127.0.0.1", "port": ports.ssh, "user": ssh_user,
                        "key": "file:.lab/ssh/client_key", "known_hosts": ".lab/ssh/known_hosts",
                        "authorized_keys": "$DRILLBOOK_LAB_DIR/ssh/authorized_keys", "connect_timeout": 5,
                        "optional": True},
        },
        "services": {
            "postgres": {
                "kind": "postgres", "database": "app",
                "user": "file:.lab/secrets/app_user", "password": "file:.lab/secrets/app_password",
                "admin_user": "postgres", "admin_password": "file:.lab/secrets/admin_password",
                "replication_user": "replicator", "replication_password": "file:.lab/secrets/replication_password",
                "sslmode": "verify-full", "sslrootcert": ".lab/ca/ca.crt", "ca_key": "file:.lab/ca/ca.key",
                "bin_dir": ".lab/bin", "nodes": [node(name) for name in NODES],
            },
            **lab_pool_and_cache(ports),
        },
        "objectives": {"rto_seconds": 30, "rpo_seconds": 5, "failed_probes": 0, "backup_age_seconds": 3600,
                       "cert_min_days": 14, "latency_p95_ms": 200, "lost_writes": 0,
                       "detect_seconds": 30, "catch_up_seconds": 60, "isolated_writes": 0},
    }


def lab_pool_and_cache(ports: LabPorts) -> dict[str, Any]:
    """The lab's PgBouncer and Redis, as services of the environment."""
    return {"pgbouncer": lab_pgbouncer(ports.pgbouncer), "redis": lab_redis(ports.redis)}


def environment_yaml(ports: LabPorts, ssh_user: str = LAB_USER, parameters: dict[str, Any] | None = None) -> str:
    """``local.yaml`` text for a lab on these ports (tests write it into their temporary projects)."""
    data = environment_data(ports, ssh_user)
    if parameters:
        data["parameters"] = parameters
    return "# The embedded lab, started by `drillbook lab up`.\n" + dump_yaml(data)


def lab_postgres(paths: LabPaths, state: LabState, redactor: Redactor | None = None) -> Postgres:
    """The lab's service as a drill target, with local shells (switching to the lab's OS user)."""
    env = validate_environment(environment_data(state.ports, state.os_user), paths.project / "parameters" / "lab.yaml")
    redactor = redactor or Redactor()

    def secret(ref: str) -> str:
        value = SecretRef.parse(ref).resolve(paths.project)
        redactor.add(ref, value)
        return value

    return Postgres(env.services["postgres"], shell=lambda host: LocalShell(host, redactor), secret=secret,
                    project=paths.project, redactor=redactor)


def env_warnings(paths: LabPaths, state: LabState) -> list[str]:
    """Does local.yaml describe the lab that runs? A drill against the wrong ports fails late."""
    if not (paths.project / "parameters" / "environments" / f"{LAB_ENV}.yaml").exists():
        return [f"parameters/environments/{LAB_ENV}.yaml is missing: drills cannot reach the lab"]
    try:
        env = load_environment(LAB_ENV, paths.project)
    except DrillbookError as exc:
        return [f"{LAB_ENV}.yaml: {exc.message}"]
    warnings = []
    for svc in env.services.values():
        for node in getattr(svc, "nodes", []):
            if node.name in NODES and node.port != state.ports.of(node.name):
                warnings.append(f"{LAB_ENV}.yaml gives {node.name} port {node.port}; the lab uses {state.ports.of(node.name)}")
    for name, port in (("pgbouncer", state.ports.pgbouncer), ("redis", state.ports.redis)):
        svc = env.services.get(name)
        if svc is not None and getattr(svc, "port", port) != port:
            warnings.append(f"{LAB_ENV}.yaml gives {name} port {getattr(svc, 'port')}; the lab uses {port}")
    ssh_host = env.hosts.get("lab-ssh")
    if ssh_host and ssh_host.port != state.ports.ssh:
        warnings.append(f"{LAB_ENV}.yaml gives lab-ssh port {ssh_host.port}; the lab's sshd uses {state.ports.ssh}")
    if ssh_host and ssh_host.user and ssh_host.user != state.os_user:
        warnings.append(f"{LAB_ENV}.yaml logs in to lab-ssh as {ssh_host.user}; the lab's sshd accepts only "
                        f"{state.os_user} (set hosts.lab-ssh.user: {state.os_user})")
    return warnings
