"""The ledger: one signed, hash-chained line per finished run (``ledger.jsonl``), plus a signed HEAD.

Each entry holds the sha256 of its run's MANIFEST and the hash of the previous entry; its own
hash covers everything but ``hash`` and ``sig``, and ``sig`` is the ed25519 signature of that
hash. HEAD repeats the last entry's seq, hash and time, signed, so cutting lines off the end of the
ledger is detected too (and an older HEAD put back, against an anchor: ``anchors``). The first entry
of an empty ledger pins its key in the trust file when none is pinned yet (``trust``); a key
transition (``rotation``) is an entry signed by the old key and the new one (``new_sig``). Appends hold an exclusive lock, so concurrent runs cannot fork the chain.
"""
# No ``from __future__ import annotations``: RunFields' NotRequired keys must stay introspectable.

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, NotRequired, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import journal
from ..errors import EvidenceError
from ..files import flocked
from . import keys, trust

LEDGER_NAME = "ledger.jsonl"
HEAD_NAME = "HEAD"
GENESIS = "0" * 64
SIGNED_OUT = ("hash", "sig", "new_sig")


class RunFields(TypedDict):
    """What an entry says about its run (taken from the run's record), so ``status`` and
    ``run --due`` read the ledger alone."""

    run_id: str
    manifest_sha256: str
    drill: NotRequired[str | None]  # the rest: what the archive enters for every run
    env: NotRequired[str | None]
    status: NotRequired[str | None]
    kind: NotRequired[str | None]
    dry_run: NotRequired[bool]
    started_at: NotRequired[str | None]
    finished_at: NotRequired[str | None]
    approvals: NotRequired[list[str]]  # the ids of the approvals it used: each is used once


def canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k not in SIGNED_OUT})).hexdigest()


@contextmanager
def locked(archive: Path) -> Iterator[None]:
    archive.mkdir(parents=True, exist_ok=True)
    with flocked(archive / ".ledger.lock"):
        yield


def first_entry(archive: Path) -> dict[str, Any] | None:
    """The ledger's first entry as ``read_entries`` reads it (None for an empty ledger), reading one line."""
    path = archive / LEDGER_NAME
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    entry = json.loads(line)
                except ValueError:
                    return {"corrupt": line.strip()}
                return entry if isinstance(entry, dict) else {"corrupt": line.strip()}
    return None


def read_entries(archive: Path) -> list[dict[str, Any]]:
    """Ledger entries in file order. A line that is not JSON is returned as ``{"corrupt": text}``."""
    path = archive / LEDGER_NAME
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entries.append(entry if isinstance(entry, dict) else {"corrupt": line.strip()})
            except ValueError:
                entries.append({"corrupt": line.strip()})
    return entries


def _last_entry(path: Path) -> dict[str, Any] | None:
    """The last line of the ledger, read from the end (appends stay O(1) in archive size)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, 65536)
        handle.seek(size - block)
        lines = handle.read().splitlines()
    try:
        return json.loads(lines[-1])
    except (ValueError, IndexError):
        raise EvidenceError(f"{path}: last line is not valid JSON", "run drillbook verify") from None


def append(archive: Path, key: Ed25519PrivateKey, fields: RunFields) -> dict[str, Any]:
    """Append a signed entry for a run (``fields`` must hold run_id and manifest_sha256)."""
    kid = keys.export_public_key(key, archive)
    with locked(archive):
        return _append_locked(archive, key, kid, fields)


def append_once(archive: Path, key: Ed25519PrivateKey, fields: RunFields) -> dict[str, Any]:
    """Append ``fields`` unless the ledger already holds its run; then only bring HEAD up to date.

    How an interrupted archiving is finished: the runner may have been stopped before the
    append, between the append and HEAD, or after both.
    """
    kid = keys.export_public_key(key, archive)
    with locked(archive):
        entries = read_entries(archive)
        mine = [e for e in entries if e.get("run_id") == fields["run_id"]]
        if not mine:
            return _append_locked(archive, key, kid, fields)
        entry = mine[-1]
        if entry.get("manifest_sha256") != fields["manifest_sha256"]:
            raise EvidenceError(f"run {fields['run_id']} is in the ledger with another MANIFEST",
                                "run drillbook verify: the bundle was changed after it was archived")
        head = read_head(archive)
        if entry is entries[-1] and (head is None or head.get("hash") != entry.get("hash")):
            write_head(archive, key, entry)  # the runner stopped between the append and HEAD
        return entry


def new_entry(key: Ed25519PrivateKey, kid: str, fields: Mapping[str, Any], seq: int, prev: str,
              cosigner: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    """The signed entry number ``seq`` after the entry whose hash is ``prev`` (a folder's or a
    bucket's); a key transition is signed by the new key too (``cosigner``)."""
    entry = {"seq": seq, **fields, "prev": prev, "recorded_at": journal.now_iso(), "key_id": kid}
    entry["hash"] = entry_hash(entry)
    entry["sig"] = keys.sign(key, entry["hash"].encode("ascii"))
    if cosigner is not None:
        entry["new_sig"] = keys.sign(cosigner, entry["hash"].encode("ascii"))
    return entry


def _append_locked(archive: Path, key: Ed25519PrivateKey, kid: str, fields: Mapping[str, Any],
                   cosigner: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    path = archive / LEDGER_NAME
    last = _last_entry(path)
    entry = new_entry(key, kid, fields, (last["seq"] + 1) if last else 1, last["hash"] if last else GENESIS, cosigner)
    if last is None:
        trust.adopt_genesis_key(archive, key, entry["recorded_at"])
    _append_line(path, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
    write_head(archive, cosigner or key, entry)
    return entry


def append_event(archive: Path, key: Ed25519PrivateKey, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Enter a signed entry that is not a run (an approval: ``fields["type"]`` says which)."""
    kid = keys.export_public_key(key, archive)
    with locked(archive):
        return _append_locked(archive, key, kid, fields)


def append_transition(archive: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> dict[str, Any]:
    """Hand signing over from ``old`` to ``new``: one entry signed by both; HEAD signed by the new key."""
    keys.export_public_key(new, archive)
    kid = keys.export_public_key(old, archive)
    fields = {"type": trust.TRANSITION, "new_key_id": keys.key_id(new.public_key()),
              "new_public_key": keys.public_pem(new.public_key()).decode("ascii")}
    with locked(archive):
        return _append_locked(archive, old, kid, fields, cosigner=new)


def _append_line(path: Path, line: bytes) -> None:
    """Append one line durably, or leave the file as it was: a full disk can cut a write short,
    and a ledger that ends in half a line refuses every later append."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size  # under the ledger lock: nobody else appends meanwhile
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def head_for(key: Ed25519PrivateKey, entry: dict[str, Any]) -> dict[str, Any]:
    """The signed HEAD that names ``entry`` as the ledger's end."""
    # The signature covers every field but ``sig``: a HEAD binds its entry's seq, hash and time.
    head = {"seq": entry["seq"], "hash": entry["hash"], "recorded_at": entry.get("recorded_at"),
            "key_id": keys.key_id(key.public_key())}
    head["sig"] = keys.sign(key, canonical(head))
    return head


def write_head(archive: Path, key: Ed25519PrivateKey, entry: dict[str, Any]) -> None:
    journal.write_json_atomic(archive / HEAD_NAME, head_for(key, entry), mode=0o644)


def read_head(archive: Path) -> dict[str, Any] | None:
    try:
        return json.loads((archive / HEAD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
