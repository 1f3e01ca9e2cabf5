"""Which PostgreSQL binaries the lab runs: the system's, else those shipped in the pgserver wheel.

System ones are found through ``pg_config`` and ``/usr/lib/postgresql/*/bin``. The lab needs
every tool of ``REQUIRED_TOOLS`` and a build with OpenSSL (it serves TLS only); existing data
needs the major version it was created with.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .targets.postgres.conventions import choose_bin_dir

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
    import glob

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
    import importlib.util

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
