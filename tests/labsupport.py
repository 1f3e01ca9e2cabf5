"""One real lab for the whole test session, in a temporary project with its own free ports.

Import the fixture into a test module (``from labsupport import lab_project``); every module
gets the same lab. It is stopped and purged at the end of the session, also after failures.
Under ``CI=true`` a missing OpenSSH server fails the tests that need it instead of skipping them.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from drillbook.config import environments
from drillbook.config.environments import Environment
from drillbook.lab import control
from drillbook.lab.environment import environment_yaml
from drillbook.lab.oslevel import lab_user
from drillbook.lab.sshd import ssh_availability, sshd_binary
from drillbook.lab.state import LabPaths, LabPorts
from drillbook.targets.postgres import Postgres

REPO = Path(__file__).resolve().parent.parent
_LAB: LabProject | None = None


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on now (the kernel's choice, released at once)."""
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class LabProject:
    root: Path
    ports: LabPorts

    @property
    def paths(self) -> LabPaths:
        return LabPaths(self.root)

    @property
    def env(self) -> Environment:
        return environments.load_environment("local", self.root)

    def postgres(self) -> Postgres:
        return Postgres.from_environment(self.env, self.root)


def make_project(base: Path, ports: LabPorts) -> Path:
    """A project whose local.yaml describes a lab on ``ports``, with the smoke drill."""
    root = base / "project"
    (root / "parameters" / "environments").mkdir(parents=True)
    (root / "runbooks").mkdir()
    (root / "notebooks" / "drills").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "drills" / "smoke.ipynb", root / "notebooks" / "drills")
    text = environment_yaml(ports, lab_user(), parameters={"smoke": {"min_free_disk_percent": 1}})
    (root / "parameters" / "environments" / "local.yaml").write_text(text)
    return root


def lab_base() -> Path:
    # Not pytest's tmp_path: it is private to us (0700) and the lab's OS user must enter it.
    base = Path(tempfile.mkdtemp(prefix="drillbook-lab-test-"))
    os.chmod(base, 0o755)
    return base


@pytest.fixture(scope="session")
def lab_project() -> LabProject:
    """The session's lab, up and healthy (started on first use)."""
    global _LAB
    if _LAB is None:
        base = lab_base()
        pg1, pg2, ssh, pgbouncer, redis = free_ports(5)
        ports = LabPorts(pg1=pg1, pg2=pg2, ssh=ssh, pgbouncer=pgbouncer, redis=redis)
        root = make_project(base, ports)
        _LAB = LabProject(root, ports)
        try:
            control.up(root, ports)
        except BaseException:
            _teardown()
            raise
    yield _LAB
    _teardown()


def _teardown() -> None:
    global _LAB
    if _LAB is None:
        return
    root, _LAB = _LAB.root, None
    try:
        control.down(root, purge=True)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def require_sshd() -> None:
    """Skip without an OpenSSH server, except under CI, where that is a failure."""
    if sshd_binary() is not None:
        return
    why = ssh_availability(None)  # e.g. "unavailable: no OpenSSH server binary (…)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the lab's sshd is {why}: the SSH tests must run here, not skip")
    pytest.skip(f"lab sshd {why}")


def require_components() -> None:
    """Skip without the lab's PgBouncer or Redis, except under CI, where that is a failure."""
    from drillbook.lab import pgbouncer, redis

    missing = [name for name, part in (("pgbouncer", pgbouncer), ("redis-server", redis)) if part.binary() is None]
    if not missing:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {', '.join(missing)} is not installed: make system-deps installs it")
    pytest.skip(f"not installed: {', '.join(missing)}")


def add_repository_notebooks(project: LabProject) -> LabProject:
    """Copy the repository's runbooks and drills into the lab's project (it starts with the smoke drill only)."""
    for folder in ("runbooks", "notebooks/drills"):
        for notebook in (REPO / folder).glob("*.ipynb"):
            (project.root / folder / notebook.name).write_bytes(notebook.read_bytes())
    return project
