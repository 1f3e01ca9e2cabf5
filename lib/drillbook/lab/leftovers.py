"""What a drill that died mid-fault leaves in the lab, removed by ``lab up`` and ``lab down``.

* nftables tables of this project's faults (``drillbook_<project tag>_*``, see ``faults.network``)
  and nothing else: without root or without nft there is nothing to remove, since no fault could
  have created one;
* filesystems mounted under ``.lab/data/scratch/`` (the disk-full drill's WAL tmpfs), so that the
  scratch copies can be removed (``lab down``; ``--purge`` could not delete a mounted directory).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..faults.network import FAMILY, remove_tables
from ..shells.local import LocalShell
from .state import LabPaths, Say


def remove_stale_tables(project: Path, say: Say) -> list[str]:
    """Delete the fault tables this project's drills left, saying which."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return []
    gone = remove_tables(LocalShell("lab"), project)
    for name in gone:
        say(f"removed stale nftables table {FAMILY} {name} (a partition a drill left behind)")
    return gone


def unmount_scratch(paths: LabPaths, say: Say) -> list[str]:
    """Unmount every filesystem mounted below the lab's scratch folder (deepest first)."""
    scratch = str((paths.data / "scratch").resolve()) + "/"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    # /proc/self/mounts escapes spaces as \040; the lab's paths may contain them.
    found = [line.split()[1].replace("\\040", " ") for line in mounts if len(line.split()) > 1]
    ours = sorted((m for m in found if m.startswith(scratch)), key=len, reverse=True)
    for mount in ours:
        done = subprocess.run(["umount", mount], capture_output=True, text=True)
        say(f"unmounted {mount}" if done.returncode == 0 else f"could not unmount {mount}: {done.stderr.strip()}")
    return ours
