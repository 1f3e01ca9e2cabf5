"""Approver keys and their signatures: an ed25519 key as PEM or OpenSSH, a signature made in process
or by ``ssh-keygen -Y sign`` (OpenSSH's SSHSIG format, checked here without ssh-keygen).

SSHSIG (OpenSSH's PROTOCOL.sshsig): the armored blob holds ``"SSHSIG"``, a version, the public key,
the namespace, a reserved string, the hash algorithm and the signature; what is signed is
``"SSHSIG"``, the namespace, the reserved string, the hash algorithm and the hash of the message.
"""
from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ConfigError, EvidenceError

NAMESPACE = "drillbook-approval"  # an approval signature can never pass for another kind of signature
ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")


def load_public(text: str, project: Path, who: str) -> Ed25519PublicKey:
    """An approver's public key from an environment file: inline (OpenSSH line or PEM) or a file."""
    raw = text.strip()
    if not raw.startswith(("ssh-", "-----BEGIN")):
        path = (project / raw).resolve()
        try:
            raw = path.read_text(encoding="ascii")[:8192].strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"approver {who}: cannot read the key file {path}: {exc}",
                              "key is a path (relative to the project) or the key itself") from None
    try:
        public = (serialization.load_ssh_public_key(raw.encode()) if raw.startswith("ssh-")
                  else serialization.load_pem_public_key(raw.encode()))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"approver {who}: the key is not a public key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"approver {who}: only ed25519 keys can sign approvals")
    return public


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
        key = (serialization.load_ssh_private_key(data, password=None) if b"OPENSSH PRIVATE KEY" in data
               else serialization.load_pem_private_key(data, password=None))
    except (OSError, ValueError, TypeError) as exc:
        raise EvidenceError(f"cannot load the approver key {path}: {exc}",
                            "an unencrypted ed25519 key, or --ssh-key to sign with ssh-keygen (passphrase, agent)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path} is not an ed25519 key")
    return key


def sign_with_ssh_keygen(key: Path, message: bytes) -> str:
    """``ssh-keygen -Y sign`` (which may ask for the key's passphrase or use the agent): the armored signature."""
    try:
        done = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE],
                              input=message, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EvidenceError(f"ssh-keygen -Y sign failed: {exc}", "install OpenSSH (ssh-keygen)") from None
    if done.returncode != 0:
        raise EvidenceError(f"ssh-keygen -Y sign failed: {done.stderr.decode('utf-8', 'replace').strip()}",
                            "pass the private key file of your SSH key with --ssh-key")
    return done.stdout.decode("ascii")


def _strings(blob: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        (size,) = struct.unpack(">I", blob[offset:offset + 4])
        out.append(blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    return out


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def verify_sshsig(public: Ed25519PublicKey, message: bytes, armored: str) -> bool:
    """Whether ``armored`` is an SSHSIG by ``public`` over ``message`` in our namespace."""
    try:
        body = armored.strip()
        if not (body.startswith(ARMOR[0]) and body.endswith(ARMOR[1])):
            return False
        blob = base64.b64decode("".join(body[len(ARMOR[0]):-len(ARMOR[1])].split()))
        if blob[:6] != b"SSHSIG" or struct.unpack(">I", blob[6:10])[0] != 1:
            return False
        key_blob, namespace, reserved, algorithm, signature = _strings(blob[10:])
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if key_blob != _string(b"ssh-ed25519") + _string(raw) or namespace != NAMESPACE.encode():
            return False
        digest = {b"sha256": hashlib.sha256, b"sha512": hashlib.sha512}[algorithm](message).digest()
        kind, sig = _strings(signature)
        if kind != b"ssh-ed25519":
            return False
        signed = b"SSHSIG" + _string(namespace) + _string(reserved) + _string(algorithm) + _string(digest)
        public.verify(sig, signed)
        return True
    except (ValueError, KeyError, struct.error, InvalidSignature):
        return False


def verify(public: Ed25519PublicKey, message: bytes, fmt: str, signature: str) -> bool:
    if fmt == "sshsig":
        return verify_sshsig(public, message, signature)
    try:
        public.verify(base64.b64decode(signature), message)
        return True
    except (InvalidSignature, ValueError):
        return False
