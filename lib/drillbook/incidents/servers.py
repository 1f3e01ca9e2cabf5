"""Which JupyterLab to open a working copy in: a running server whose root holds the file.

A server's runtime file also holds its login token; it never leaves this module (a URL printed
in a terminal ends up in scrollback and incident channels). The operator logs in as usual.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True)
class LabServer:
    url: str  # base URL, ends with "/"
    root: Path
    pid: int


def running_servers() -> list[LabServer]:
    """The Jupyter servers of this user that are running now (their pid is alive)."""
    from jupyter_server.serverapp import list_running_servers  # tornado and friends: only for this verb

    found = []
    for info in list_running_servers():
        root = info.get("root_dir") or info.get("notebook_dir")
        url = str(info.get("url", ""))
        if root and url.startswith(("http://", "https://")):
            base = url if url.endswith("/") else url + "/"
            found.append(LabServer(base, Path(root).resolve(), int(info.get("pid", 0))))
    return found


def lab_url(notebook: Path, servers: list[LabServer] | None = None) -> str | None:
    """The JupyterLab URL of ``notebook`` on the first running server that serves it, without the token."""
    target = notebook.resolve()
    for server in running_servers() if servers is None else servers:
        if target.is_relative_to(server.root):
            return f"{server.url}lab/tree/{quote(target.relative_to(server.root).as_posix())}"
    return None


def start_command(project: Path) -> str:
    """How to start JupyterLab for the project (its config file, with the pre-save hook, is read from there)."""
    here = Path.cwd().resolve()
    where = "" if here == project.resolve() else f"cd {project} && "
    venv = project / ".venv" / "bin" / "jupyter"
    jupyter = ".venv/bin/jupyter" if venv.exists() and os.access(venv, os.X_OK) else "jupyter"
    return f"{where}{jupyter} lab"
