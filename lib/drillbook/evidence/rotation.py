"""``drillbook keys``: pinning this machine's signing key in the trust file, and rotating it.

A rotation generates a new key, enters a key-transition entry in the ledger signed by the old key
and the new one, ends the old key's window in the trust file where the new key's begins, and only
then makes the new key the signing key. The old private key is kept beside it as
``signing-key.<key_id>.retired.pem`` (0600): in-flight markers a runner signed before the rotation
must still be recognised by the next command (``retired_public_keys``).

Order matters for an interruption: the new private key is written first (``signing-key.next.pem``),
so a rotation stopped after the ledger entry can be finished by running it again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import journal, paths
from ..errors import EvidenceError
from ..files import write_atomic
from . import keys, ledger, trust

NEXT_NAME = "signing-key.next.pem"


@dataclass(frozen=True)
class Rotated:
    old_key_id: str
    new_key_id: str
    entry: dict[str, Any]
    trust_file: Path


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path} is not an ed25519 key")
    return key


def retired_public_keys(home: Path | None = None) -> list[Ed25519PublicKey]:
    """The public halves of this user's retired signing keys (newest rotation last)."""
    found = []
    for path in sorted((home or paths.home_dir()).glob("signing-key.*.retired.pem")):
        try:
            found.append(_load_private(path).public_key())
        except (OSError, ValueError, EvidenceError):
            continue  # not a key of ours: it signs nothing
    return found


def require_trust_file(archive: Path) -> Path:
    path = trust.trust_for(archive)
    if path is None:
        raise EvidenceError(f"the archive {archive} belongs to no project, so it has no trust file",
                            "run from the project, or set DRILLBOOK_TRUST to its parameters/trust.yaml")
    return path


def trust_current(archive: Path, home: Path | None = None, trust_file: Path | None = None) -> tuple[str, Path, bool]:
    """Pin this machine's signing key; (key id, trust file, added). Its window opens at the first
    entry it signed (whoever runs this vouches for what the key signed), else now. ``trust_file``:
    the project's, when ``archive`` is a local copy of an S3 archive's ledger."""
    path = trust_file or require_trust_file(archive)
    key = keys.load_or_create_signing_key(home)
    kid = keys.key_id(key.public_key())
    first = next((e.get("recorded_at") for e in ledger.read_entries(archive) if e.get("key_id") == kid), None)
    with ledger.locked(archive):
        added = trust.add_key(path, key.public_key(), str(first) if first else journal.now_iso())
    return kid, path, added


def rotate(archive: Path, home: Path | None = None) -> Rotated:
    """Hand signing over to a new key (see the module docstring for the order of the steps)."""
    home = home or paths.home_dir()
    path = require_trust_file(archive)
    if not (home / keys.PRIVATE_NAME).exists():
        raise EvidenceError(f"no signing key in {home} to rotate", "run a drill first: it creates the key")
    old = keys.load_or_create_signing_key(home)
    old_id = keys.key_id(old.public_key())
    pinned = trust.load_trust(path) or []
    now = journal.parse_iso(journal.now_iso())
    if not any(k.key_id == old_id and k.covers(now) for k in pinned):
        raise EvidenceError(f"the signing key {old_id} is not trusted now by {path}",
                            "a rotation must start from a pinned key: drillbook keys trust, then commit the file")
    next_path = home / NEXT_NAME
    new = _load_private(next_path) if next_path.exists() else Ed25519PrivateKey.generate()
    write_atomic(next_path, _pem(new), mode=0o600)
    entries = ledger.read_entries(archive)
    done = entries[-1] if entries and entries[-1].get("type") == trust.TRANSITION and \
        entries[-1].get("new_key_id") == keys.key_id(new.public_key()) else None  # a rotation run again
    entry = done or ledger.append_transition(archive, old, new)
    with ledger.locked(archive):
        trust.hand_over(path, old.public_key(), new.public_key(), entry["recorded_at"])
    os.replace(home / keys.PRIVATE_NAME, home / f"signing-key.{old_id}.retired.pem")
    os.replace(next_path, home / keys.PRIVATE_NAME)
    return Rotated(old_id, keys.key_id(new.public_key()), entry, path)
