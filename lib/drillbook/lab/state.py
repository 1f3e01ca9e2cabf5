"""What every lab command agrees on: its ports, its paths under ``.lab/``, and ``lab.json``.

``LabPorts`` (chosen when the lab is created), ``LabPaths`` (every path, from the project root),
``LabState`` (what ``lab up`` decided: ports, OS user, binaries, ssh), and the constants the
lab's modules share.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..errors import LabError
from ..files import write_atomic

LAB_ENV = "local"  # the environment file that describes the lab
LAB_USER = "drillbook-lab"  # the unprivileged OS user the servers run as when we are root
NODES = ("pg1", "pg2")
PORT_VARS = {"pg1": "DRILLBOOK_LAB_PG1_PORT", "pg2": "DRILLBOOK_LAB_PG2_PORT", "ssh": "DRILLBOOK_LAB_SSH_PORT",
             "pgbouncer": "DRILLBOOK_LAB_PGBOUNCER_PORT", "redis": "DRILLBOOK_LAB_REDIS_PORT"}
Say = Callable[[str], None]


@dataclass(frozen=True)
class LabPorts:
    pg1: int = 55432
    pg2: int = 55433
    ssh: int = 55422
    pgbouncer: int = 55434
    redis: int = 55479

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: int | None) -> LabPorts:
        """Ports from explicit values, else environment variables, else the defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, var in PORT_VARS.items():
            raw = given.get(name) or environ.get(var)
            if raw in (None, ""):
                continue
            try:
                port = int(raw)
            except ValueError:
                raise LabError(f"{var}={raw!r} is not a port number", "use an integer between 1024 and 65535") from None
            if not 1024 <= port <= 65535:
                raise LabError(f"lab port {port} for {name} is out of range", "use a port between 1024 and 65535")
            values[name] = port
        ports = cls(**values)
        if len(set(asdict(ports).values())) != len(PORT_VARS):
            shown = " ".join(f"{k}={v}" for k, v in asdict(ports).items())
            raise LabError(f"lab ports must differ, got {shown}")
        return ports

    def of(self, node: str) -> int:
        return int(getattr(self, node))


@dataclass
class LabState:
    """What ``lab up`` decided, in ``.lab/lab.json``, so later commands agree with it."""

    ports: LabPorts
    os_user: str
    bin_dir: str = ""
    pg_major: int = 0
    ssh: str = "unknown"  # "enabled" or "unavailable: <reason>"
    pgbouncer: str = "unknown"  # likewise, for the lab's PgBouncer and Redis
    redis: str = "unknown"
    created_at: str = ""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ports": asdict(self.ports)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        return cls(**{**data, "ports": LabPorts(**data["ports"])})


class LabPaths:
    """Every path of the lab, from the project root."""

    def __init__(self, project: Path) -> None:
        self.project = project.resolve()
        self.root = self.project / ".lab"
        self.state = self.root / "lab.json"
        self.bin = self.root / "bin"
        self.secrets = self.root / "secrets"
        self.ca = self.root / "ca"
        self.data = self.root / "data"
        self.tls = self.data / "tls"
        self.ssh = self.root / "ssh"

    def node(self, name: str) -> Path:
        return self.data / name

    def secret(self, name: str) -> Path:
        return self.secrets / name


def load_state(paths: LabPaths) -> LabState | None:
    try:
        return LabState.from_json(paths.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LabError(f"{paths.state} is unreadable: {exc}", "drillbook lab down --purge, then drillbook lab up") from None


def save_state(paths: LabPaths, state: LabState) -> None:
    write_atomic(paths.state, state.to_json(), mode=0o644)
