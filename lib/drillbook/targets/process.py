"""Starting a server process on its host as the owner of its configuration file (PgBouncer, Redis).

The way ``pg_ctl`` runs as the data directory's owner: the login itself when it owns the file,
``runuser`` when it is root, ``sudo -n`` otherwise (an operator's account with the right to).
"""
from __future__ import annotations

import shlex

from ..shells.base import Result, Shell


def start_as_owner(shell: Shell, binary: str, config: str, *args: str, timeout: float = 60.0) -> Result:
    """Run ``binary [args] config`` on the shell's host as the owner of ``config``."""
    path = shlex.quote(config)
    start = " ".join(shlex.quote(part) for part in (binary, *args)) + f" {path}"
    script = (f"owner=$(stat -c %U {path}) && if [ \"$(id -un)\" = \"$owner\" ]; then {start}; "
              f"elif [ \"$(id -u)\" = 0 ]; then runuser -u \"$owner\" -- {start}; "
              f"else sudo -n -u \"$owner\" -- {start}; fi")
    return shell.run(script, timeout=timeout)
