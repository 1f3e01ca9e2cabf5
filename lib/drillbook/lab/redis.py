"""The lab's Redis: the application's cache on loopback, with a password (``secrets/redis_password``).

Files under ``.lab/data/redis/`` (the lab's OS user's): ``redis.conf`` (0600: it holds the
password; rewritten by every ``lab up``), ``redis.pid``, ``redis.log`` and the RDB snapshot. The
environment's ``restart`` is not set for the lab: the Redis target starts ``redis-server`` with
that configuration as its owner, the way it would run ``systemctl restart`` elsewhere.

Without a Redis binary (or with ``DRILLBOOK_LAB_REDIS=none``) the lab comes up without it, and
``availability`` says why: the runbooks that need it are then not applicable.
"""
from __future__ import annotations

import os
import secrets as pysecrets
from pathlib import Path

from .oslevel import (
    chown,
    find_server_binary,
    require_free_port,
    server_availability,
    start_server,
    stop_server,
    write_private,
)
from .state import LabPaths, LabState, Say

BINARY_VAR = "DRILLBOOK_LAB_REDIS"
SECRET = "redis_password"


def binary() -> str | None:
    """The Redis to run: ``$DRILLBOOK_LAB_REDIS`` (a path, or ``none``), else the system's."""
    return find_server_binary(BINARY_VAR, "redis-server", "/usr/bin/redis-server")


def availability(found: str | None) -> str:
    return server_availability(found, BINARY_VAR,
                               "no Redis server binary (apt-get install redis-server, or make system-deps as root)")


def folder(paths: LabPaths) -> Path:
    return paths.data / "redis"


def config_path(paths: LabPaths) -> Path:
    return folder(paths) / "redis.conf"


def render_conf(paths: LabPaths, port: int, password: str) -> str:
    d = folder(paths)
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "\n".join([
        "# drillbook lab Redis: loopback only, a password, written by `drillbook lab up`",
        "bind 127.0.0.1", f"port {port}", "protected-mode yes",
        f"requirepass {quoted}", "daemonize yes", f'pidfile "{d / "redis.pid"}"', f'logfile "{d / "redis.log"}"',
        f'dir "{d}"', "# an RDB snapshot now and then: the runbook reports persistence", "save 60 1000",
        "maxmemory 64mb",
        "maxmemory-policy allkeys-lru", "",
    ])


def pid(paths: LabPaths) -> int | None:
    """The pid of the lab's Redis if it runs (checked against its command line)."""
    try:
        found = int((folder(paths) / "redis.pid").read_text().strip())
        cmdline = Path(f"/proc/{found}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return found if "redis-server" in cmdline else None


def start(paths: LabPaths, state: LabState, say: Say) -> None:
    """Write the configuration and start Redis if it does not run (a running one keeps its data)."""
    found = binary()
    state.redis = availability(found)
    if found is None:
        stop(paths)
        say(f"redis: {state.redis}")
        return
    if not paths.secret(SECRET).exists():
        write_private(paths.secret(SECRET), pysecrets.token_urlsafe(24) + "\n")
    password = paths.secret(SECRET).read_text(encoding="utf-8").strip()
    d = folder(paths)
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o700)
    chown(d, state.os_user)
    write_private(config_path(paths), render_conf(paths, state.ports.redis, password), owner=state.os_user)
    if pid(paths) is not None:
        return
    require_free_port(state.ports.redis, "redis", "(DRILLBOOK_LAB_REDIS_PORT)")
    start_server(state.os_user, [found, str(config_path(paths))], "redis", state.ports.redis, d / "redis.log")
    say(f"redis listening on 127.0.0.1:{state.ports.redis}")


def stop(paths: LabPaths) -> bool:
    return stop_server(pid(paths))


def lab_service(port: int) -> dict[str, object]:
    """The lab's Redis as a service of the environment (``local.yaml``)."""
    return {"kind": "redis", "host": "lab", "port": port, "password": f"file:.lab/secrets/{SECRET}",
            "config": ".lab/data/redis/redis.conf"}
