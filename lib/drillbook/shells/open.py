"""``open_shell``: the shell an environment's host names, local or SSH."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config.secrets import Redactor
from ..errors import NotFound
from .base import Shell
from .local import LocalShell

if TYPE_CHECKING:  # annotations only: the environment model does not need loading to open a shell
    from ..config.environments import Environment


def open_shell(env: Environment, host: str, secret: Callable[[str], str], redactor: Redactor, project: Path) -> Shell:
    """The shell for ``host`` of environment ``env``; ``secret`` resolves the host's key reference."""
    if host not in env.hosts:
        known = ", ".join(env.hosts) or "none"
        raise NotFound(f"environment {env.name!r} has no host {host!r}", f"known hosts: {known}")
    spec = env.hosts[host]
    if spec.shell == "local":
        return LocalShell(host, redactor)
    from .ssh import SSHShell  # paramiko: loaded only when a host is reached over SSH

    return SSHShell.from_host(host, spec, secret, redactor, project)
