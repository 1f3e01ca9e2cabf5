"""The lab's firewall: nftables tables a drill left behind (its run died mid-partition).

``lab up`` and ``lab down`` remove this project's fault tables (``drillbook_<project tag>_*``,
see ``faults.network``) and nothing else: without root or without nft there is nothing to remove,
since no fault could have created one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..faults.network import FAMILY, remove_tables
from ..shells.local import LocalShell
from .state import Say


def remove_stale_tables(project: Path, say: Say) -> list[str]:
    """Delete the fault tables this project's drills left, saying which."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return []
    gone = remove_tables(LocalShell("lab"), project)
    for name in gone:
        say(f"removed stale nftables table {FAMILY} {name} (a partition a drill left behind)")
    return gone
