"""The trust file (``parameters/trust.yaml``): the public keys allowed to sign evidence, and when.

The archive's own ``keys/`` folder proves only that the archive is consistent with itself: whoever
can write the archive can generate a key, re-sign every entry and replace ``keys/``. The trust
file is committed with the project, so a key is trusted because the repository's history says so.
Each key has its fingerprint (sha256 of the raw public key; ``key_id`` is its first 16 hex
characters) and a validity window; ``verify`` refuses an entry whose key the file does not list,
or lists but not at the entry's ``recorded_at``.

How a project gets its first key: the first entry of an *empty* ledger records the key that signs
it when the trust file is absent or lists no key (see ``adopt_genesis_key``). Nothing else ever adds
a key by itself: once the ledger has entries, a missing trust file fails ``verify`` and a new key
needs ``drillbook keys trust`` (a reviewed change to a committed file) or ``drillbook keys rotate``.

``Signers`` walks the ledger in order: a key-transition entry (signed by the old key and the new
one, see ``rotation``) retires the old key for every later entry, whatever the file says.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import journal, paths
from ..config import yamlfile
from ..errors import ConfigError, EvidenceError, NotFound
from ..files import write_atomic
from . import keys

TRANSITION = "key-transition"  # the ``type`` of a ledger entry that hands signing to a new key
HEADER = ("# Public keys allowed to sign this project's evidence; `drillbook verify` checks every ledger entry\n"
          "# against it. Commit this file: a key is trusted because the repository's history says so.\n"
          "# Change it with `drillbook keys trust` or `drillbook keys rotate`, never by hand-editing a window.\n")


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    fingerprint: str  # "SHA256:" + 64 hex characters of the raw 32-byte key
    public: Ed25519PublicKey
    valid_from: datetime | None
    valid_until: datetime | None

    def covers(self, when: datetime | None) -> bool:
        if when is None:
            return self.valid_from is None and self.valid_until is None
        return (self.valid_from is None or self.valid_from <= when) and \
            (self.valid_until is None or when <= self.valid_until)

    def window(self) -> str:
        start = journal_text(self.valid_from) or "the beginning"
        return f"{start} to {journal_text(self.valid_until) or 'now'}"


def journal_text(when: datetime | None) -> str | None:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None


def fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def trust_path(project: Path | None = None) -> Path:
    """``$DRILLBOOK_TRUST``, else ``<project>/parameters/trust.yaml``."""
    if os.environ.get("DRILLBOOK_TRUST"):
        return Path(os.environ["DRILLBOOK_TRUST"]).resolve()
    return (project or paths.project_root()) / "parameters" / "trust.yaml"


def trust_for(archive: Path) -> Path | None:
    """The trust file that belongs to ``archive``: ``$DRILLBOOK_TRUST``; the project's when the archive
    is ``<project>/reports/evidence`` or the project's configured archive; else None (an archive
    written through the API alone, or a copy: pass ``--public-key``)."""
    if os.environ.get("DRILLBOOK_TRUST"):
        return Path(os.environ["DRILLBOOK_TRUST"]).resolve()
    archive = archive.resolve()
    owner = archive.parent.parent
    if archive.parent.name == "reports" and (owner / "parameters" / "environments").is_dir():
        return owner / "parameters" / "trust.yaml"
    try:
        if archive == paths.archive_root().resolve():
            return trust_path()
    except (NotFound, EvidenceError):  # no project, or its archive is on object storage (remote.py asks)
        pass
    return None


# --------------------------------------------------------------------------- reading
def _when(raw: object, path: Path, index: int, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        parsed = journal.parse_iso(str(raw))
    except ValueError:
        raise ConfigError(f"{path}: key {index + 1}: {name} {raw!r} is not an ISO 8601 time",
                          'write e.g. "2026-01-31T12:00:00.000Z", or null for an open end') from None
    if parsed.tzinfo is None:
        raise ConfigError(f"{path}: key {index + 1}: {name} {raw!r} has no time zone", "end it with Z (UTC)")
    return parsed


def _parse_key(item: object, path: Path, index: int) -> TrustedKey:
    if not isinstance(item, dict) or not isinstance(item.get("public_key"), str):
        raise ConfigError(f"{path}: key {index + 1} is not a mapping with a public_key (PEM)",
                          "regenerate it with drillbook keys trust")
    try:
        public = serialization.load_pem_public_key(item["public_key"].encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"{path}: key {index + 1}: public_key is not a PEM public key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{path}: key {index + 1} is not an ed25519 key")
    actual = fingerprint(public)
    if item.get("fingerprint") != actual or item.get("key_id") != keys.key_id(public):
        raise ConfigError(f"{path}: key {index + 1}: fingerprint or key_id does not match its public_key "
                          f"(the key is {actual})", "a key and its fingerprint must be changed together")
    start = _when(item.get("valid_from"), path, index, "valid_from")
    end = _when(item.get("valid_until"), path, index, "valid_until")
    if start and end and end < start:
        raise ConfigError(f"{path}: key {index + 1}: valid_until is before valid_from")
    return TrustedKey(keys.key_id(public), actual, public, start, end)


def load_trust(path: Path) -> list[TrustedKey] | None:
    """The trusted keys, or None when the file does not exist. A malformed file is a ConfigError."""
    if not path.exists():
        return None
    data = yamlfile.read_yaml(path, "trust file")
    items = (data or {}).get("keys") if isinstance(data, dict) or data is None else None
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError(f"{path}: `keys` must be a list of keys", "see docs/audit/verifying-evidence.md")
    return [_parse_key(item, path, i) for i, item in enumerate(items)]


def load_pems(pem_paths: list[Path]) -> list[TrustedKey]:
    """An auditor's own keys (``verify --public-key``): trusted at any time, nothing else is."""
    return [TrustedKey(kid, fingerprint(pub), pub, None, None)
            for kid, pub in keys.load_public_keys(Path("."), pem_paths).items()]


# --------------------------------------------------------------------------- writing
def _item(public: Ed25519PublicKey, start: str | None, end: str | None) -> dict[str, Any]:
    return {"key_id": keys.key_id(public), "fingerprint": fingerprint(public), "valid_from": start,
            "valid_until": end, "public_key": keys.public_pem(public).decode("ascii")}


def _raw_items(path: Path) -> list[dict[str, Any]]:
    load_trust(path)  # refuse to rewrite a file that does not parse
    data = yamlfile.read_yaml(path, "trust file") if path.exists() else None
    return list((data or {}).get("keys") or [])


def _write(path: Path, items: list[dict[str, Any]]) -> None:
    """Written by hand rather than dumped: the PEM as a literal block, so a review diff reads well."""
    lines = [HEADER, "keys:\n"]
    for item in items:
        lines.append(f"  - key_id: {json.dumps(str(item.get('key_id')))}\n"
                     f"    fingerprint: {json.dumps(str(item.get('fingerprint')))}\n"
                     f"    valid_from: {json.dumps(item.get('valid_from'))}\n"
                     f"    valid_until: {json.dumps(item.get('valid_until'))}\n"
                     "    public_key: |\n")
        lines.extend(f"      {line}\n" for line in str(item.get("public_key")).strip().splitlines())
    write_atomic(path, "".join(lines) if items else HEADER + "keys: []\n", mode=0o644)


def add_key(path: Path, public: Ed25519PublicKey, valid_from: str | None) -> bool:
    """Trust ``public`` from ``valid_from`` on; False when the file already lists it."""
    items = _raw_items(path)  # the caller holds the archive's ledger lock: one writer at a time
    if any(i.get("key_id") == keys.key_id(public) for i in items):
        return False
    _write(path, items + [_item(public, valid_from, None)])
    return True


def hand_over(path: Path, old: Ed25519PublicKey, new: Ed25519PublicKey, at: str) -> None:
    """A rotation: the old key's window ends at ``at``, the new key's starts there."""
    items = _raw_items(path)  # under the archive's ledger lock, as add_key
    for item in items:
        if item.get("key_id") == keys.key_id(old) and item.get("valid_until") is None:
            item["valid_until"] = at
    if not any(i.get("key_id") == keys.key_id(new) for i in items):
        items.append(_item(new, at, None))
    _write(path, items)


def adopt_genesis_key(archive: Path, key: Ed25519PrivateKey, at: str) -> Path | None:
    """Record the key that signs the first entry of an empty ledger, when no key is trusted yet.

    Called by the ledger under its lock, only for seq 1. Returns the file written, or None. An
    archive that belongs to no project (see ``trust_for``) has no trust file to write.
    """
    return pin_first_key(trust_for(archive), key, at)


def pin_first_key(path: Path | None, key: Ed25519PrivateKey, at: str) -> Path | None:
    """``adopt_genesis_key`` for the trust file ``path`` (an S3 ledger's first entry names it itself)."""
    if path is None or not path.parent.is_dir():
        return None
    try:
        if path.exists() and load_trust(path):
            return None  # keys are pinned already: the first entry must be signed by one of them
        return path if add_key(path, key.public_key(), at) else None
    except ConfigError:
        return None  # a malformed trust file must not stop a run's evidence being entered: verify says so


# --------------------------------------------------------------------------- checking
@dataclass
class Signers:
    """Which key may sign which entry, as the ledger is walked from its first entry to its last."""

    trusted: list[TrustedKey] | None  # None: no trust file at all
    source: str
    follow_transitions: bool = False  # only for an auditor's own keys: the trust file is the authority
    retired: set[str] = field(default_factory=set)
    introduced: dict[str, TrustedKey] = field(default_factory=dict)

    def lookup(self, kid: str, when: datetime | None) -> tuple[TrustedKey | None, str]:
        """The key ``kid`` if trusted at ``when``, else None and why not."""
        if kid in self.retired:
            return None, f"signed by key {kid}, retired by a key transition earlier in the ledger"
        listed = [k for k in (self.trusted or []) if k.key_id == kid] + \
            ([self.introduced[kid]] if kid in self.introduced else [])
        if not listed:
            return None, f"signed by unknown key {kid}: {self.source} does not list it"
        for candidate in listed:
            if candidate.covers(when):
                return candidate, ""
        windows = "; ".join(k.window() for k in listed)
        return None, f"signed by key {kid} at {journal_text(when) or 'an unknown time'}, outside its window ({windows})"

    def check(self, entry: dict[str, Any], when: datetime | None) -> str | None:
        """What is wrong with the signature of ``entry`` (None when it checks)."""
        found, why = self.lookup(str(entry.get("key_id")), when)
        message = str(entry.get("hash")).encode("ascii", "replace")  # an edited entry may hold anything
        if found is None:
            return why
        if not keys.verify_signature(found.public, message, str(entry.get("sig"))):
            return "bad signature on its ledger entry"
        if entry.get("type") == TRANSITION:
            return self._transition(entry, message, when)
        return None

    def check_head(self, head: dict[str, Any], last_time: datetime | None) -> str | None:
        """HEAD's signature covers every field it holds but ``sig`` (seq, hash, recorded_at, key_id)."""
        when = last_time
        if head.get("recorded_at") is not None:
            try:
                when = journal.parse_iso(str(head["recorded_at"]))
            except ValueError:
                return "recorded_at is not a time"
        found, why = self.lookup(str(head.get("key_id")), when)
        if found is None:
            return why
        body = canonical_bytes({k: v for k, v in head.items() if k != "sig"})
        return None if keys.verify_signature(found.public, body, str(head.get("sig"))) else "signature is invalid"

    def _transition(self, entry: dict[str, Any], message: bytes, when: datetime | None) -> str | None:
        try:
            new = serialization.load_pem_public_key(str(entry.get("new_public_key")).encode("ascii"))
        except ValueError:
            return "key transition: new_public_key is not a PEM public key"
        if not isinstance(new, Ed25519PublicKey) or keys.key_id(new) != entry.get("new_key_id"):
            return "key transition: new_public_key does not match new_key_id"
        if not keys.verify_signature(new, message, str(entry.get("new_sig"))):
            return "key transition: not signed by the new key"
        self.retired.add(str(entry.get("key_id")))
        if not self.follow_transitions:
            return None
        # The old key vouches for the new one: an auditor holding only the old key can follow.
        self.introduced[keys.key_id(new)] = TrustedKey(keys.key_id(new), fingerprint(new), new, when, None)
        return None


def canonical_bytes(data: dict[str, Any]) -> bytes:
    """The ledger's canonical JSON (kept here too: the ledger imports this module)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def signers_for(public_keys: list[Path] | None, trust_file: Path | None) -> Signers:
    """The auditor's own keys when given, else the project's trust file."""
    if public_keys:
        return Signers(load_pems(public_keys), "--public-key", follow_transitions=True)
    if trust_file is None:
        return Signers(None, "no trust file")
    return Signers(load_trust(trust_file), str(trust_file.name))


__all__ = ["Signers", "TRANSITION", "TrustedKey", "adopt_genesis_key", "add_key", "fingerprint", "hand_over",
           "load_trust", "signers_for", "trust_for", "trust_path"]

