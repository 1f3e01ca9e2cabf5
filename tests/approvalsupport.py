"""A production environment with access rules, approvers' own keys, and the dry run → approve → run steps."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import Project, cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PROD = """production: true
hosts:
  here:
    shell: local
access:
  operators: [bob, alice]
  approvers:
    - {name: alice, key: keys/alice.pub}
    - {name: bob, key: keys/bob.pub}
"""


def approver_key(project: Project, folder: Path, name: str, listed: bool = True) -> Path:
    """``name``'s private key (PEM, outside the project); its public half in keys/ when ``listed``."""
    key = Ed25519PrivateKey.generate()
    private = folder / f"{name}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    if listed:
        (project.root / "keys").mkdir(exist_ok=True)
        (project.root / "keys" / f"{name}.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private


def production(project: Project, folder: Path) -> dict[str, Path]:
    project.write_env("prod", PROD)
    project.add_notebook("gated.ipynb")
    return {name: approver_key(project, folder, name) for name in ("alice", "bob")}


def dry_run(project: Project, *params: str, operator: str = "bob", env: dict[str, str] | None = None) -> str:
    result = cli(project, "run", "gated", "--env", "prod", "--dry-run", *params,
                 env={"DRILLBOOK_OPERATOR": operator, **(env or {})})
    assert result.code == 0, result.output
    return Path(re.search(r"evidence: (\S+)", result.stdout).group(1)).name


def approve(project: Project, dry: str, key: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    result = cli(project, "approve", dry, "--gate", "promote", "--key", str(key), *extra, env=env)
    assert result.code == 0, result.output
    return re.search(r"approval (apv-[0-9a-f]+)", result.stdout).group(1)
