"""The lab's SSH host: sshd on loopback as the lab's OS user, its configuration, keys and known_hosts.

Without an OpenSSH server binary (or with ``DRILLBOOK_LAB_SSHD=none``) the lab comes up
without it, and ``ssh_availability`` says why.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import LabError
from ..pki import make_ssh_key, public_line
from .oslevel import as_user, require_free_port, stop_pid, wait_port, write_private
from .state import LabPaths, LabState, Say

SSHD_VAR = "DRILLBOOK_LAB_SSHD"  # path of the sshd to run, or "none" for a lab without ssh


def sshd_binary() -> str | None:
    """The OpenSSH server to run: ``$DRILLBOOK_LAB_SSHD`` (a path, or ``none``), else the system's."""
    chosen = os.environ.get(SSHD_VAR, "")
    if chosen:
        return None if chosen == "none" or not os.access(chosen, os.X_OK) else chosen
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)


def render_sshd_config(paths: LabPaths, port: int, user: str) -> str:
    ssh = paths.ssh
    return "\n".join([
        "# drillbook lab sshd: loopback only, keys only, one user. Written by `drillbook lab up`.",
        f"Port {port}", "ListenAddress 127.0.0.1", f'HostKey "{ssh / "host_ed25519_key"}"',
        f'PidFile "{ssh / "sshd.pid"}"', f'AuthorizedKeysFile "{ssh / "authorized_keys"}"',
        f"AllowUsers {user}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin no", "UsePAM no",
        # The project may live under any directory (e.g. /tmp); the lab writes its key files itself.
        "StrictModes no", "AllowTcpForwarding no", "X11Forwarding no", "AllowAgentForwarding no",
        "PermitTTY no", "PrintMotd no", "UseDNS no", "LoginGraceTime 20", "MaxStartups 30:50:100",
        f'SetEnv DRILLBOOK_LAB_DIR="{paths.root}"', "",
    ])


def known_hosts_line(address: str, port: int, host_public: str) -> str:
    """The known_hosts line for a host's public key (OpenSSH writes a non-22 port as ``[address]:port``)."""
    where = address if port == 22 else f"[{address}]:{port}"
    return f"{where} {' '.join(host_public.split()[:2])}"


def ensure_ssh_files(paths: LabPaths, state: LabState) -> None:
    """Keys exist even without sshd: the environment lists the client key, and runs resolve it."""
    ssh, user = paths.ssh, state.os_user
    client, host = ssh / "client_key", ssh / "host_ed25519_key"
    if not client.exists():
        private, public = make_ssh_key("drillbook-lab-client")
        write_private(client, private)
        (ssh / "client_key.pub").write_text(public + "\n")
    if not host.exists():
        private, public = make_ssh_key("drillbook-lab-host")
        write_private(host, private, owner=user)
        (ssh / "host_ed25519_key.pub").write_text(public + "\n")
    authorized = ssh / "authorized_keys"
    current = public_line(client.read_text(), "drillbook-lab-client")
    existing = authorized.read_text() if authorized.exists() else ""
    # The lab's client key must always log in (a key rotation may have been interrupted).
    if current.split()[1] not in existing:
        write_private(authorized, existing + ("" if not existing or existing.endswith("\n") else "\n") + current + "\n",
                      owner=user)
    (ssh / "known_hosts").write_text(known_hosts_line("127.0.0.1", state.ports.ssh,
                                                      (ssh / "host_ed25519_key.pub").read_text()) + "\n")
    config = ssh / "sshd_config"
    config.write_text(render_sshd_config(paths, state.ports.ssh, user))
    for path in (config, ssh / "known_hosts", ssh / "host_ed25519_key.pub", ssh / "client_key.pub"):
        os.chmod(path, 0o644)


def sshd_pid(paths: LabPaths) -> int | None:
    """The pid of the lab's sshd if it runs (checked against its command line, not just the pid file)."""
    try:
        pid = int((paths.ssh / "sshd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if str(paths.ssh / "sshd_config") in cmdline else None


def ssh_availability(binary: str | None) -> str:
    """``enabled`` with an sshd binary, else ``unavailable: <why>`` (what ``lab status`` shows)."""
    if binary is not None:
        return "enabled"
    if os.environ.get(SSHD_VAR) == "none":
        return f"unavailable: disabled by {SSHD_VAR}=none"
    if os.environ.get(SSHD_VAR):
        return f"unavailable: {SSHD_VAR}={os.environ[SSHD_VAR]} is not an executable"
    return "unavailable: no OpenSSH server binary (apt-get install openssh-server, or make system-deps as root)"


def start_sshd(paths: LabPaths, state: LabState, say: Say) -> None:
    """Start the lab's sshd as its OS user, or restart it if its configuration changed; records
    in ``state.ssh`` whether ssh is available (without a binary, a running one is stopped)."""
    binary = sshd_binary()
    state.ssh = ssh_availability(binary)
    if binary is None:
        if (pid := sshd_pid(paths)) is not None:
            stop_pid(pid)
        say(f"ssh: {state.ssh}")
        return
    config = str(paths.ssh / "sshd_config")
    pid = sshd_pid(paths)
    if pid and _config_unchanged(paths):
        return
    if pid:
        stop_pid(pid)
    require_free_port(state.ports.ssh, "ssh", "--ssh-port")
    check = as_user(state.os_user, [binary, "-t", "-f", config])
    if check.returncode != 0:
        raise LabError(f"sshd refuses the lab's configuration: {check.stderr.strip().splitlines()[-1:]}",
                       f"read {config}")
    started = as_user(state.os_user, [binary, "-f", config, "-E", str(paths.ssh / "sshd.log")])
    if started.returncode != 0 or not wait_port(state.ports.ssh, 10):
        raise LabError(f"sshd did not start on 127.0.0.1:{state.ports.ssh}", f"read {paths.ssh / 'sshd.log'}")
    (paths.ssh / ".running_config").write_text((paths.ssh / "sshd_config").read_text())
    say(f"sshd listening on 127.0.0.1:{state.ports.ssh} (login {state.os_user})")


def _config_unchanged(paths: LabPaths) -> bool:
    running = paths.ssh / ".running_config"
    return running.exists() and running.read_text() == (paths.ssh / "sshd_config").read_text()
