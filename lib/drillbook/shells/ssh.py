"""``SSHShell``: the shell interface of ``base.py`` over SSH, with paramiko.

    sh = drill.shell("lab-ssh")              # an environment host with ``shell: ssh``
    sh.run("uname -n", check=True).stdout     # Result(command, exit_code, stdout, stderr, seconds)
    sh.run(["cat", "-"], input="hello\\n")    # a list is quoted for the remote shell

* Key authentication only: the host's ``key`` is a secret reference to a private key (OpenSSH or
  PEM; ed25519, ECDSA or RSA). No agent, no keys from ~/.ssh, no passwords.
* Host keys are checked against the host's ``known_hosts`` file (relative to the project root)
  and never added: an unknown or changed host key refuses the connection (``UnreachableHost``).
* ``connect_timeout`` bounds TCP connect, banner and authentication; ``run(timeout=…)`` bounds a
  command (exit code 124 on timeout, as ``LocalShell``). stdout/stderr are redacted of secrets.

Key rotation helpers (the rotate-ssh-key runbook): ``new_keypair``, ``authorized_keys_add``,
``authorized_keys_remove``, ``try_login``.
"""
from __future__ import annotations

import io
import re
import select
import shlex
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import paramiko

from ..config.secrets import Redactor
from ..errors import UnreachableHost
from ..pki import make_ssh_key
from .base import Result, Shell, command_text

if TYPE_CHECKING:  # annotations only: a host's settings come from the environment model
    from ..config.environments import Host

KEY_TYPES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


def load_private_key(text: str, where: str = "the private key") -> paramiko.PKey:
    """Parse a private key (any supported type) from its text."""
    for kind in KEY_TYPES:
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise UnreachableHost(f"{where} is not an unencrypted ed25519, ECDSA or RSA private key",
                          "point the host's key at an OpenSSH private key file (ssh-keygen -t ed25519 -N '')")


class SSHShell:
    """Runs commands on one host over SSH. Connect with ``connect()`` (``from_host`` does it)."""

    def __init__(self, name: str, address: str, port: int, user: str, key: paramiko.PKey, known_hosts: Path,
                 redactor: Redactor | None = None, connect_timeout: float = 10.0) -> None:
        self.name = name
        self.address, self.port, self.user = address, port, user
        self.key = key
        self.known_hosts = known_hosts
        self.redactor = redactor or Redactor()
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None

    @classmethod
    def from_host(cls, host_name: str, host_spec: Host, secret: Callable[[str], str], redactor: Redactor,
                  project: Path) -> SSHShell:
        """The shell for an environment host (``shell: ssh``), connected. Raises ``UnreachableHost``."""
        if not host_spec.key:
            raise UnreachableHost(f"ssh host {host_name!r} has no key", "set key: file:PATH (a private key) for the host")
        if not host_spec.known_hosts:
            raise UnreachableHost(f"ssh host {host_name!r} has no known_hosts file",
                                  "set known_hosts: PATH; host keys are never accepted blindly")
        if not host_spec.user:
            raise UnreachableHost(f"ssh host {host_name!r} has no user", "set user: NAME for the host")
        known = Path(host_spec.known_hosts).expanduser()
        known = known if known.is_absolute() else project / known
        key = load_private_key(secret(host_spec.key), f"key {host_spec.key} of host {host_name!r}")
        shell = cls(host_name, host_spec.address, host_spec.port, host_spec.user, key, known, redactor,
                    host_spec.connect_timeout)
        shell.connect()
        return shell

    # ------------------------------------------------------------------ connection
    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def connect(self) -> None:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except FileNotFoundError:
            raise UnreachableHost(f"known_hosts file {self.known_hosts} of host {self.name!r} does not exist",
                                  "create it with the host's key (ssh-keyscan, checked by hand); for the lab: "
                                  "drillbook lab up") from None
        except (OSError, paramiko.SSHException) as exc:
            raise UnreachableHost(f"cannot read known_hosts file {self.known_hosts}: {exc}") from None
        except UnicodeDecodeError:  # paramiko reads it as text
            raise UnreachableHost(f"known_hosts file {self.known_hosts} of host {self.name!r} is not text",
                                  "point known_hosts at an OpenSSH known_hosts file (ssh-keyscan output)") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # never trust on first use
        try:
            client.connect(self.address, port=self.port, username=self.user, pkey=self.key,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, channel_timeout=self.connect_timeout,
                           allow_agent=False, look_for_keys=False)
        except BaseException as exc:
            client.close()
            raise self._unreachable(exc) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client

    def _unreachable(self, exc: BaseException) -> BaseException:
        host = f"ssh host {self.name!r} ({self.where})"
        if isinstance(exc, paramiko.BadHostKeyException):
            return UnreachableHost(f"{host} presented a host key that does not match {self.known_hosts}",
                                   "someone may be intercepting the connection, or the host was reinstalled: "
                                   "verify its fingerprint out of band before updating known_hosts")
        if isinstance(exc, paramiko.AuthenticationException):
            return UnreachableHost(f"{host} refused our key ({exc})",
                                   "check the host's user and that its authorized_keys holds the public key "
                                   "of the key secret")
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return UnreachableHost(f"{host} is not in {self.known_hosts}; unknown host keys are refused",
                                   "add the host's key to that file after checking its fingerprint; for the "
                                   "lab: drillbook lab up")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return UnreachableHost(f"{host} did not answer within {self.connect_timeout:g} s",
                                   "check the address, port and firewall; for the lab: drillbook lab up")
        if isinstance(exc, (OSError, paramiko.ssh_exception.NoValidConnectionsError)):
            reason = getattr(exc, "strerror", None) or str(exc)
            return UnreachableHost(f"cannot reach {host}: {reason}",
                                   "is sshd running there? for the lab: drillbook lab up (needs openssh-server)")
        if isinstance(exc, paramiko.SSHException):
            return UnreachableHost(f"ssh to {host} failed: {exc}", "check the host's sshd log")
        return exc

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.close()
            self.connect()  # a dropped connection is re-established once, with the same checks
            transport = self._client.get_transport() if self._client else None
        assert transport is not None
        return transport

    # ------------------------------------------------------------------ commands
    def run(self, command: str | Sequence[str], *, timeout: float = 60.0, check: bool = False,
            input: str | None = None) -> Result:
        """Run ``command`` through the remote user's shell; exit 124 if it outlives ``timeout``."""
        text = command_text(command)
        t0 = time.monotonic()
        try:
            channel = self._transport().open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise self._unreachable(exc) from None
        with channel:
            channel.exec_command(text)
            if input is not None:
                channel.sendall(input.encode("utf-8"))
            channel.shutdown_write()  # EOF on stdin: commands that read it must not wait forever
            code, out, err = _collect(channel, t0 + timeout)
        stdout, stderr = _decode(out), _decode(err)
        if code is None:
            code, stderr = 124, stderr + f"\ntimed out after {timeout:g} s"
        scrub = self.redactor.scrub
        result = Result(scrub(text), code, scrub(stdout), scrub(stderr), round(time.monotonic() - t0, 3))
        return result.check() if check else result

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SSHShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[int | None, list[bytes], list[bytes]]:
    """Read stdout and stderr until the command exits (code) or the deadline passes (None)."""
    out: list[bytes] = []
    err: list[bytes] = []
    while True:
        while channel.recv_ready():
            out.append(channel.recv(65536))
        while channel.recv_stderr_ready():
            err.append(channel.recv_stderr(65536))
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            if channel.eof_received or channel.closed:
                return channel.recv_exit_status(), out, err
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, out, err
        select.select([channel], [], [], min(remaining, 0.5))


def _decode(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


# ----------------------------------------------------------------------------- key rotation
def new_keypair(comment: str = "drillbook") -> tuple[str, str]:
    """A new ed25519 key: (private key, OpenSSH format; public key line for authorized_keys)."""
    return make_ssh_key(comment)


def _remote_path(shell: Shell, path: str) -> str:
    """Expand ``~`` and ``$VARS`` of an authorized_keys path the way the host's shell does."""
    if not re.fullmatch(r"[A-Za-z0-9_$./{}~-]+", path):
        raise UnreachableHost(f"authorized_keys path {path!r} has characters drillbook will not pass to a shell")
    expr = "$HOME" + path[1:] if path.startswith("~") else path
    expanded = shell.run(f'printf %s "{expr}"', timeout=30, check=True).stdout
    return expanded


def authorized_keys_add(shell: Shell, path: str, public_line: str) -> None:
    """Append a public key to the authorized_keys file at ``path`` on the shell's host (idempotent)."""
    file = shlex.quote(_remote_path(shell, path))
    key = shlex.quote(public_line.strip())
    shell.run(f"umask 077; touch {file} && (grep -qxF {key} {file} || printf '%s\\n' {key} >> {file})",
              timeout=30, check=True)


def authorized_keys_remove(shell: Shell, path: str, public_line: str) -> None:
    """Remove every line holding this public key (matched on its base64 blob) from authorized_keys."""
    blob = public_line.split()[1]
    file = shlex.quote(_remote_path(shell, path))
    # Rewrite through a temporary file and rename, so sshd never reads a half-written file.
    shell.run(f"umask 077; grep -vF {shlex.quote(blob)} {file} > {file}.tmp; mv {file}.tmp {file}",
              timeout=30, check=True)


def try_login(host_spec: Host, private_key: str, project: Path, name: str = "probe") -> tuple[bool, str]:
    """Can ``private_key`` log in to the host? (True, "") or (False, why). Host keys are still checked."""
    known = Path(host_spec.known_hosts).expanduser()
    known = known if known.is_absolute() else project / known
    shell = SSHShell(name, host_spec.address, host_spec.port, host_spec.user, load_private_key(private_key),
                     known, connect_timeout=host_spec.connect_timeout)
    try:
        shell.connect()
        shell.run("true", timeout=30, check=True)
        return True, ""
    except UnreachableHost as exc:
        return False, exc.message
    finally:
        shell.close()
