"""``drillbook keys``: the signing keys the trust file pins (``list``, ``trust``, ``rotate``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, archive_path, cache_root, err, out, table

keys_app = typer.Typer(no_args_is_help=True, help="The signing keys pinned in parameters/trust.yaml: list, trust, rotate.")
app.add_typer(keys_app, name="keys")

ARCHIVE = typer.Option(None, help="Evidence archive (default: reports/evidence).")


@keys_app.command("list")
def list_keys(archive: Optional[Path] = ARCHIVE) -> None:
    """Show the keys the trust file pins, with their fingerprints and validity windows."""
    from ..evidence import rotation, trust

    path = rotation.require_trust_file(archive_path(archive))
    pinned = trust.load_trust(path)
    if not pinned:
        out.print(f"{path}: no key is pinned yet (the first run pins its key; or drillbook keys trust)", soft_wrap=True)
        return
    out.print(table(f"Trusted keys ({path.name})", ["key id", "fingerprint", "valid"],
                    [[k.key_id, k.fingerprint, k.window()] for k in pinned]))


def _trust_current(archive: Optional[Path]) -> tuple[str, Path, bool]:
    """``rotation.trust_current`` on the archive; an S3 one (``DRILLBOOK_ARCHIVE``) through its ledger's copy."""
    from ..evidence import rotation
    from ..evidence.store import project_archive

    where = project_archive() if archive is None else None
    if where is None or isinstance(where, Path):
        return rotation.trust_current(archive_path(archive))
    from ..evidence import remote, trust

    return rotation.trust_current(remote.sync_ledger(where, cache_root()), trust_file=trust.trust_path())


@keys_app.command("trust")
def trust_key(archive: Optional[Path] = ARCHIVE) -> None:
    """Pin this machine's signing key in the trust file, valid from now on (then commit the file)."""
    kid, path, added = _trust_current(archive)
    if added:
        out.print(f"trusted signing key {kid} from now on in {path}: commit it", soft_wrap=True)
    else:
        out.print(f"signing key {kid} is already in {path}", soft_wrap=True)


@keys_app.command("rotate")
def rotate(archive: Optional[Path] = ARCHIVE) -> None:
    """Make a new signing key: a key-transition entry signed by the old and the new key goes into the ledger,
    the trust file ends the old key's window where the new one's begins, and the new key signs from now on."""
    from ..evidence import rotation

    done = rotation.rotate(archive_path(archive))
    err.print(f"key transition entered in the ledger as seq {done.entry['seq']}, signed by {done.old_key_id} "
              f"and {done.new_key_id}", soft_wrap=True)
    out.print(f"rotated: {done.old_key_id} -> {done.new_key_id}; {done.trust_file} updated: commit it", soft_wrap=True)
