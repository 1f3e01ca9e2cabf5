"""``drillbook approve``: sign an approval of a dry run's plan for one gate (four eyes)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import paths
from .app import app, archive_path, err, out


@app.command()
def approve(
    dry_run_id: str = typer.Argument(..., help="The run id of the dry run whose plan you approve."),
    gate: str = typer.Option(..., "--gate", help="The gate this approval opens (a mutating step's gate)."),
    expires: str = typer.Option("4h", "--expires", help="How long it stays valid: 30m, 4h, 2d (at most 7d)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Your own ed25519 private key (PEM or OpenSSH, unencrypted)."),
    ssh_key: Optional[Path] = typer.Option(None, "--ssh-key", help="Your SSH private key, signed with ssh-keygen -Y sign (passphrase, agent)."),
    archive: Optional[Path] = typer.Option(None, help="Evidence archive (default: reports/evidence)."),
) -> None:
    """Approve gate NAME of a dry run's plan (notebook, parameters and environment file, by their sha256)
    with your own key, and enter the approval in the ledger. The operator then runs the same notebook,
    parameters and environment with `--approval ID`; it must not be you."""
    from ..config.environments import load_environment
    from ..evidence import approvals
    from ..evidence.archive import load_record

    root = archive_path(archive)
    project = paths.project_root()
    span = approvals.parse_expiry(expires)
    by = approvals.signer(key, ssh_key)
    env = load_environment(str(load_record(root, dry_run_id).get("env")), project)
    doc, name = approvals.approve(root, project, env, dry_run_id, gate, by, span)
    if name is None:
        err.print(f"warning: key {doc['key_fingerprint']} is not an approver of environment {env.name!r} "
                  "(access.approvers): a run will refuse this approval", soft_wrap=True)
    out.print(f"approval {doc['id']}: gate {gate} of dry run {dry_run_id} (plan {doc['plan']['sha256'][:16]}) "
              f"by {name or 'an unlisted key'}, expires {doc['expires_at']}", soft_wrap=True)
    out.print(f"run it with the dry run's parameters: drillbook run {doc['drill']} --env {env.name} "
              f"--approval {doc['id']} ...", soft_wrap=True)
