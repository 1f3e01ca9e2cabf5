"""Where a command runs: ``Shell`` (``run`` → ``Result``), here (``LocalShell``) or over SSH (``shells.ssh``).

``open_shell`` gives the shell an environment's host names. ``SSHShell`` is not exported here:
importing it loads paramiko, which only SSH hosts need.
"""
from __future__ import annotations

from .base import CommandFailed, Result, Shell
from .local import LocalShell
from .open import open_shell

__all__ = ["CommandFailed", "LocalShell", "Result", "Shell", "open_shell"]
