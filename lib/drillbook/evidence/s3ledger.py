"""The ledger of an S3 archive, shared by writers on many machines: one object per entry.

An entry is the same signed, hash-chained JSON as a line of a folder's ``ledger.jsonl``, stored
as ``ledger/<seq>.json``. Appending is a conditional create of the next number's object
(``If-None-Match: *``): of two writers that read the same end, exactly one creates it; the other
reads the entry that won, chains onto it and tries the next number. So the chain cannot fork and
no entry is lost, with no lock server.

HEAD is the same signed end as a folder's. It is written after the entry and only moves
forward: replaced with ``If-Match`` on the ETag just read, and left alone when it already names a
later entry. A writer stopped between the entry and HEAD leaves HEAD one behind until the next
append (or that run's recovery) moves it; ``verify`` reports the gap meanwhile.
"""
from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import EvidenceError, NotFound
from ..files import write_atomic
from . import keys, ledger, trust
from .store import PARALLEL, S3Store

LEDGER_DIR = "ledger"
DIGITS = 12
MAX_TRIES = 10_000  # a bound, never reached in practice: each lost race means another writer won
CACHE_INDEX = ".etags.json"


def entry_name(seq: int) -> str:
    return f"{LEDGER_DIR}/{seq:0{DIGITS}d}.json"


def seq_of(name: str) -> int | None:
    """The sequence number an entry object's name (relative to the prefix) holds, if it is one."""
    inside = name.startswith(LEDGER_DIR + "/") and name.endswith(".json")
    stem = name[len(LEDGER_DIR) + 1:-len(".json")] if inside else ""
    return int(stem) if len(stem) == DIGITS and stem.isdigit() else None


@dataclass
class Appended:
    entry: dict[str, Any]
    retries: int  # conditional creates lost to another writer


def _parse(data: bytes, name: str) -> dict[str, Any]:
    try:
        entry = json.loads(data)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        raise EvidenceError(f"ledger object {name} is not a valid entry", "run drillbook verify")
    return entry


def _entry(store: S3Store, seq: int) -> dict[str, Any] | None:
    name = entry_name(seq)
    got = store.get(store.archive.key(name))
    return None if got is None else _parse(got[0], name)


def export_public_key(store: S3Store, key: Ed25519PrivateKey) -> str:
    """Publish the public key as ``keys/<key_id>.pem`` (created once, never overwritten)."""
    public = key.public_key()
    kid = keys.key_id(public)
    store.create(store.archive.key("keys", f"{kid}.pem"), keys.public_pem(public))
    return kid


def read_head(store: S3Store) -> tuple[dict[str, Any] | None, str | None]:
    """HEAD and its ETag (None, None when absent; an unreadable HEAD is ({}, etag))."""
    got = store.get(store.archive.key(ledger.HEAD_NAME))
    if got is None:
        return None, None
    try:
        head = json.loads(got[0])
    except ValueError:
        head = {}
    return (head if isinstance(head, dict) else {}), got[1]


def _end(store: S3Store) -> tuple[int, str]:
    """The last entry's (seq, hash): from HEAD (or a listing without one), then forward."""
    head, _ = read_head(store)
    if head and isinstance(head.get("seq"), int) and isinstance(head.get("hash"), str):
        seq, last = head["seq"], head["hash"]
    else:
        numbers = [n for n in (seq_of(store.archive.relative(k)) for k in store.list(LEDGER_DIR + "/")) if n]
        seq = max(numbers, default=0)
        found = _entry(store, seq) if seq else None
        last = str(found["hash"]) if found else ledger.GENESIS
    return _forward(store, seq, last)


def _forward(store: S3Store, seq: int, last: str) -> tuple[int, str]:
    """Past entries written after (seq, last): HEAD may lag behind the ledger's true end."""
    while (following := _entry(store, seq + 1)) is not None:
        seq, last = seq + 1, str(following.get("hash"))
    return seq, last


def append(store: S3Store, key: Ed25519PrivateKey, fields: ledger.RunFields) -> Appended:
    """Append a signed entry for a run: create the next number's object, or lose the race,
    re-read the end and try again."""
    kid = export_public_key(store, key)
    seq, last = _end(store)
    for attempt in range(MAX_TRIES):
        entry = ledger.new_entry(key, kid, fields, seq + 1, last)
        body = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        if store.create(store.archive.key(entry_name(seq + 1)), body):
            if entry["seq"] == 1:  # as a folder's first entry does: pin its key when none is trusted yet
                trust.pin_first_key(_project_trust_file(), key, entry["recorded_at"])
            advance_head(store, key, entry)
            return Appended(entry, attempt)
        # Another writer took this number: chain onto what it wrote (and whatever followed).
        time.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))  # spread out a crowd of writers
        seq, last = _forward(store, seq, last)
    raise EvidenceError(f"could not append to the ledger of {store.archive} after {MAX_TRIES} tries",
                        "another writer keeps winning: try again")


def _project_trust_file() -> Path | None:
    """The trust file of the project writing to the bucket (an S3 archive is a project's configured one)."""
    try:
        return trust.trust_path()
    except NotFound:
        return None


def advance_head(store: S3Store, key: Ed25519PrivateKey, entry: dict[str, Any]) -> None:
    """Make HEAD name ``entry``, unless it already names a later one (compare-and-swap on the ETag)."""
    body = json.dumps(ledger.head_for(key, entry), sort_keys=True).encode("utf-8")
    for _ in range(MAX_TRIES):
        head, etag = read_head(store)
        if head and isinstance(head.get("seq"), int) and head["seq"] >= entry["seq"]:
            return
        if store.replace(store.archive.key(ledger.HEAD_NAME), body, etag):
            return
    raise EvidenceError(f"could not update HEAD of {store.archive}", "try again")


def append_once(store: S3Store, key: Ed25519PrivateKey, fields: ledger.RunFields,
                cache: Path | None = None) -> dict[str, Any]:
    """Append ``fields`` unless the ledger holds its run already; then only bring HEAD forward."""
    mine = [e for e in read_entries(store, cache) if e.get("run_id") == fields["run_id"]]
    if not mine:
        return append(store, key, fields).entry
    if mine[-1].get("manifest_sha256") != fields["manifest_sha256"]:
        raise EvidenceError(f"run {fields['run_id']} is in the ledger with another MANIFEST",
                            "run drillbook verify: the bundle was changed after it was archived")
    advance_head(store, key, mine[-1])
    return mine[-1]


def read_entries(store: S3Store, cache: Path | None = None) -> list[dict[str, Any]]:
    """Every entry in sequence order, as ``ledger.read_entries`` gives a folder's: an object that
    is not an entry, or a number with no object, is ``{"corrupt": "<what, naming the object>"}``.

    With ``cache`` (a local folder), objects whose ETag is unchanged since the last call are read
    from there: only new entries are fetched (``status`` on a large archive)."""
    listed = {store.archive.relative(k): etag for k, etag in store.list(LEDGER_DIR + "/").items()}
    numbered = {n: name for name in listed if (n := seq_of(name))}
    known = _cached_index(cache)
    missing = [name for name in numbered.values() if known.get(name) != listed[name]]
    fetched = _fetch(store, missing)
    if cache is not None:
        for name, data in fetched.items():
            (cache / name).parent.mkdir(parents=True, exist_ok=True)
            (cache / name).write_bytes(data)
        known = {name: listed[name] for name in numbered.values() if name in fetched or known.get(name) == listed[name]}
        # The cache may not exist yet (an empty ledger), and two commands may refresh it at once.
        write_atomic(cache / CACHE_INDEX, json.dumps(known).encode("utf-8"))
    entries: list[dict[str, Any]] = []
    for seq in range(1, max(numbered, default=0) + 1):
        name = numbered.get(seq, entry_name(seq))
        data = fetched.get(name) if name in fetched else _cached(cache, name, known)
        if data is None:
            entries.append({"corrupt": f"object {name} is missing"})
            continue
        try:
            entries.append(_parse(data, name))
        except EvidenceError as exc:
            entries.append({"corrupt": exc.message})
    return entries


def _fetch(store: S3Store, names: list[str]) -> dict[str, bytes]:
    def one(name: str) -> tuple[str, bytes | None]:
        got = store.get(store.archive.key(name))
        return name, None if got is None else got[0]

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return {name: data for name, data in pool.map(one, names) if data is not None}


def _cached_index(cache: Path | None) -> dict[str, str]:
    if cache is None:
        return {}
    try:
        index = json.loads((cache / CACHE_INDEX).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in index.items()} if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def _cached(cache: Path | None, name: str, known: dict[str, str]) -> bytes | None:
    if cache is None or name not in known:
        return None
    try:
        return (cache / name).read_bytes()
    except OSError:
        return None
