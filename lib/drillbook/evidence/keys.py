"""The ed25519 signing key: created on first use outside the repository (mode 0600).

Its public half is exported into the archive (``keys/<key_id>.pem``) and published with the
site, so anyone can check signatures without access to the private key. Several public keys
may sit side by side after a key rotation; each ledger entry names the key that signed it.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import paths
from ..errors import EvidenceError
from ..files import write_atomic

PRIVATE_NAME = "signing-key.pem"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_or_create_signing_key(home: Path | None = None) -> Ed25519PrivateKey:
    directory = home or paths.home_dir()
    path = directory / PRIVATE_NAME
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise EvidenceError(
                f"signing key {path} is readable by others (mode {mode:o})",
                f"chmod 600 {path}",
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise EvidenceError(f"signing key {path} cannot be loaded: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise EvidenceError(f"signing key {path} is not an ed25519 key")
        return key
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # O_EXCL: two first runs at once must not overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_signing_key(directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def export_public_key(key: Ed25519PrivateKey, archive: Path) -> str:
    """Write the public key into the archive's ``keys/`` folder; return its key id."""
    public = key.public_key()
    kid = key_id(public)
    target = archive / "keys" / f"{kid}.pem"
    if not target.exists():
        # All of it or no file: a key cut short by a full disk would never be rewritten (it exists)
        # and would fail every later verify. 0644: it is published with the archive and the site.
        write_atomic(target, public_pem(public), mode=0o644)
    return kid


def load_public_keys(archive: Path, trusted: list[Path] | None = None) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id: those published in the archive, or only ``trusted`` when given
    (an auditor's own copy, so a key swapped inside the archive proves nothing)."""
    found: dict[str, Ed25519PublicKey] = {}
    candidates = list(trusted) if trusted else sorted((archive / "keys").glob("*.pem"))
    for path in candidates:
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise EvidenceError(f"public key {path} cannot be loaded: {exc}") from None
        if isinstance(public, Ed25519PublicKey):
            found[key_id(public)] = public
    return found


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode("ascii")


def verify_signature(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature), message)
        return True
    except (InvalidSignature, ValueError):
        return False
