"""Which PostgreSQL binaries the lab runs: the system's, else those shipped in the pgserver wheel.

System ones are found through ``pg_config`` and ``/usr/lib/postgresql/*/bin``. The lab needs
every tool of ``REQUIRED_TOOLS`` and a build with OpenSSL (it serves TLS only); existing data
needs the major version it was created with. ``select_binaries`` decides, and links ``.lab/bin`` to them.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import LabError
from ..targets.postgres.conventions import choose_bin_dir
from .state import NODES, LabPaths, LabState

REQUIRED_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata")


def pg_major(bin_dir: Path) -> int | None:
    """Major version of the binaries in ``bin_dir`` (from ``pg_ctl --version``)."""
    try:
        out = subprocess.run([str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in out).split()
    return int(digits[0].split(".")[0]) if digits and digits[0].split(".")[0].isdigit() else None


def binary_candidates(pg_config: str | None = "pg_config", pattern: str = "/usr/lib/postgresql/*/bin",
                      wheel: bool = True) -> list[tuple[int, str]]:
    """PostgreSQL binary directories with every tool the lab needs, system ones first, highest version first."""
    dirs: list[Path] = []
    if pg_config and shutil.which(pg_config):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            dirs.append(Path(out.stdout.strip()))
    dirs += [Path(p) for p in glob.glob(pattern)]
    found: dict[str, int] = {}
    for directory in dirs:
        if all((directory / tool).is_file() for tool in REQUIRED_TOOLS) and str(directory) not in found:
            major = pg_major(directory)
            if major:
                found[str(directory.resolve())] = major
    system = sorted(((m, p) for p, m in found.items()), key=lambda c: -c[0])
    return system + ([w] if wheel and (w := wheel_binaries()) else [])


def wheel_binaries() -> tuple[int, str] | None:
    """The PostgreSQL shipped in the pgserver wheel, if installed."""
    spec = importlib.util.find_spec("pgserver")  # located, not imported: importing it has side effects
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "pginstall" / "bin"
    major = pg_major(directory) if (directory / "pg_ctl").is_file() else None
    return (major, str(directory)) if major else None


def choose_binaries(candidates: list[tuple[int, str]], want: int | None) -> str | None:
    """The first candidate of the version the data needs; for a new lab, the first (system, highest)."""
    if want is None:
        return candidates[0][1] if candidates else None
    return choose_bin_dir(candidates, want)


def supports_tls(bin_dir: Path) -> bool:
    """Were these binaries built with OpenSSL? (The pgserver wheel's are not: no TLS, no lab.)"""
    pg_config = bin_dir / "pg_config"
    if not pg_config.is_file():
        return True  # cannot tell: the server's log will say if ssl = on is refused
    out = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=10).stdout
    return "--with-openssl" in out or "--with-ssl=openssl" in out


def select_binaries(paths: LabPaths, state: LabState) -> None:
    """Choose the binaries (those in use if they still fit the data), record them in ``state``, link ``.lab/bin``."""
    want = data_version(paths)
    current = Path(state.bin_dir) if state.bin_dir else None
    if current and (current / "pg_ctl").is_file() and (want is None or pg_major(current) == want):
        chosen: str | None = str(current)
    else:
        found = binary_candidates()
        usable = [c for c in found if supports_tls(Path(c[1]))]
        chosen = choose_binaries(usable, want)
        if not chosen and found:
            raise LabError(f"the PostgreSQL binaries found ({', '.join(p for _, p in found)}) cannot serve TLS, "
                           "and the lab serves nothing else", "install PostgreSQL built with OpenSSL: apt-get install "
                           "postgresql (make system-deps does it as root)")
    if not chosen:
        need = f"PostgreSQL {want}" if want else "PostgreSQL"
        raise LabError(f"no {need} binaries found (looked at pg_config, /usr/lib/postgresql/*/bin, the pgserver wheel)",
                       "apt-get install postgresql (make system-deps does it as root)"
                       + ("; or drillbook lab down --purge to start over with another version" if want else ""))
    state.bin_dir, state.pg_major = chosen, pg_major(Path(chosen)) or 0
    if paths.bin.is_symlink() or paths.bin.exists():
        if os.readlink(paths.bin) == chosen:
            return
        paths.bin.unlink()
    paths.bin.symlink_to(chosen)


def data_version(paths: LabPaths) -> int | None:
    """The PostgreSQL major version the lab's data was created with (None before there is data)."""
    for name in NODES:
        version = paths.node(name) / "PG_VERSION"
        try:
            return int(version.read_text().strip())
        except (OSError, ValueError):
            continue
    return None
