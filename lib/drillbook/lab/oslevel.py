"""The lab on the operating system: the OS user its servers run as, owned files, processes, loopback ports.

As root, the servers (and sshd) run as the unprivileged ``drillbook-lab`` (initdb refuses root):
``as_user`` runs a command as that user, ``chown`` and ``write_private`` give it its files.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import LabError
from ..files import kill
from .state import LAB_ENV, LAB_USER, LabPaths


# ----------------------------------------------------------------------------- the OS user
def lab_user() -> str:
    """Who the servers run as: ``drillbook-lab`` when we are root, else ourselves."""
    return LAB_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


def ensure_os_user() -> str:
    user = lab_user()
    if user != LAB_USER:
        return user
    try:
        pwd.getpwnam(user)
        return user
    except KeyError:
        pass
    if not shutil.which("useradd"):
        raise LabError(f"cannot create the lab's OS user {user}: useradd not found",
                       f"create an unprivileged user named {user} with a home directory and /bin/sh")
    # A real shell (sshd runs commands through it) and a home (sshd starts sessions there).
    done = subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                           f"/var/lib/{user}", "--shell", "/bin/sh", "--comment", "drillbook lab", user],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"cannot create the lab's OS user {user}: {done.stderr.strip()}",
                       f"create an unprivileged user named {user} yourself, then re-run drillbook lab up")
    return user


def chown(path: Path, user: str) -> None:
    """Give ``path`` to ``user`` (only root can; anyone else already owns what it writes)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def as_user(user: str, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command as the lab user (root switches, anyone else is already that user)."""
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0 and user != "root":
        entry = pwd.getpwnam(user)
        kwargs = dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd="/")
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def make_dirs(paths: LabPaths, user: str) -> None:
    """Create ``.lab/`` and its directories with their modes; data, tls and ssh belong to ``user``."""
    for directory, mode, owner in ((paths.root, 0o755, None), (paths.secrets, 0o700, None),
                                   (paths.ca, 0o755, None), (paths.data, 0o755, user),
                                   (paths.tls, 0o700, user), (paths.ssh, 0o755, user)):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, mode)
        if owner:
            chown(directory, owner)


def check_access(paths: LabPaths, user: str) -> None:
    """Fail early, with the fix, if ``user`` cannot write to the data directory."""
    done = as_user(user, ["test", "-w", str(paths.data)])
    if done.returncode != 0:
        raise LabError(f"the lab's OS user {user} cannot write to {paths.data}",
                       f"make every parent directory of {paths.project} searchable (chmod o+x), or move the project")


# ----------------------------------------------------------------------------- private files
def write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write a file only its owner may read (0600 from the start), given to ``owner`` if named."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    if owner:
        chown(path, owner)


# ----------------------------------------------------------------------------- processes and loopback ports
def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` and wait up to ``timeout`` seconds for it to exit."""
    if not kill(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def port_open(port: int) -> bool:
    """Does something accept connections on 127.0.0.1:``port``?"""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for 127.0.0.1:``port`` to accept connections; False if it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.05)
    return False


def require_free_port(port: int, what: str, option: str) -> None:
    """Refuse, with the fix, a lab port that another program already listens on."""
    if port_open(port):
        raise LabError(f"port {port} (lab {what}) is already in use by another program",
                       f"stop it, or create the lab on other ports: drillbook lab down --purge; "
                       f"drillbook lab up {option} N (and update parameters/environments/{LAB_ENV}.yaml)")


def start_server(user: str, command: list[str], name: str, port: int, log: Path) -> None:
    """Start a daemonising server (PgBouncer, Redis) as ``user`` and wait for its port; else one line
    naming the last thing it said and the log to read."""
    done = as_user(user, command)
    if done.returncode != 0 or not wait_port(port, 10):
        why = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]
        raise LabError(f"{name} did not start on 127.0.0.1:{port}" + (f": {why}" if why else ""), f"read {log}")


def stop_server(running: int | None) -> bool:
    """Stop a server the lab started, by its pid (None: not running); whether it was running."""
    if running is None:
        return False
    stop_pid(running)
    return True


def find_server_binary(variable: str, name: str, system_path: str) -> str | None:
    """A server the lab runs: ``$variable`` (a path, or ``none``), else ``name`` on PATH, else ``system_path``."""
    chosen = os.environ.get(variable, "")
    if chosen:
        return None if chosen == "none" or not os.access(chosen, os.X_OK) else chosen
    return shutil.which(name) or (system_path if os.access(system_path, os.X_OK) else None)


def server_availability(found: str | None, variable: str, missing: str) -> str:
    """``enabled``, or why not: ``$variable`` is no executable, or ``missing`` (how to install it)."""
    if found is not None:
        return "enabled"
    if os.environ.get(variable):
        return f"unavailable: {variable}={os.environ[variable]} is not an executable"
    return f"unavailable: {missing}"
