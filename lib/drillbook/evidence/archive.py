"""The evidence archive: run bundles, their MANIFEST, and reading runs back.

    <archive>/ledger.jsonl, HEAD, keys/<key_id>.pem
    <archive>/runs/<run_id>/record.json, notebook.ipynb, notebook.html, attachments/, MANIFEST

A bundle is written to a hidden ``.partial`` folder, scrubbed of secrets, listed in MANIFEST,
renamed into place in one step and only then entered in the ledger. A runner stopped after the
rename leaves a bundle that ``finish_archived`` enters in the ledger later (see ``inflight``).
Checking the whole archive against the ledger is ``verify``'s.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..config.secrets import Redactor
from ..errors import EvidenceError
from . import ledger
from .record import Record

MANIFEST_NAME = "MANIFEST"
RECORD_NAME = "record.json"
RUNS = "runs"
TEXT_SUFFIXES = {".json", ".ipynb", ".html", ".txt", ".log", ".md", ".csv", ".svg", ".yaml", ".jsonl", ".out"}


def sha256_file(path: Path | str) -> str:
    with open(path, "rb", buffering=0) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()  # one reused buffer, GIL released


def _bundle_files(bundle: Path) -> set[str]:
    """Every file below ``bundle`` by its path relative to it (``os.walk``: pathlib's rglob costs
    more than hashing a small bundle)."""
    found = set()
    for folder, _, names in os.walk(bundle):
        prefix = os.path.relpath(folder, bundle).replace(os.sep, "/") + "/"
        found.update((n if prefix == "./" else prefix + n) for n in names)
    return found


def run_dir(archive: Path, run_id: str) -> Path:
    return archive / RUNS / run_id


# --------------------------------------------------------------------------- writing
def _write_scrubbed(target: Path, data: str | bytes, redactor: Redactor) -> None:
    """Write ``data`` with every secret replaced. One pass over the serialised text is enough:
    the redactor knows each value's JSON-escaped form too."""
    if isinstance(data, str):
        target.write_text(redactor.scrub(data), encoding="utf-8")
        return
    try:  # attachments: scrub anything that is text, whatever its suffix
        target.write_text(redactor.scrub(data.decode("utf-8")), encoding="utf-8")
    except UnicodeDecodeError:
        target.write_bytes(data)


def check_bundle(bundle: Path, manifest_sha: str) -> list[str]:
    """What is wrong with one bundle compared with the ledger's MANIFEST hash (empty if intact)."""
    if not bundle.is_dir():
        return ["deleted: the run's folder is missing"]
    manifest = bundle / MANIFEST_NAME
    try:
        text = manifest.read_bytes()
    except OSError:
        return ["modified: MANIFEST is missing"]
    issues = []
    if hashlib.sha256(text).hexdigest() != manifest_sha:
        issues.append("modified: MANIFEST does not match the ledger")
    listed: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    present = _bundle_files(bundle) - {MANIFEST_NAME}
    for name in sorted(set(listed) - present):
        issues.append(f"modified: {name} was removed")
    for name in sorted(present - set(listed)):
        issues.append(f"modified: {name} was added after archiving")
    for name in sorted(set(listed) & present):
        if sha256_file(os.path.join(bundle, name)) != listed[name]:
            issues.append(f"modified: {name} changed")
    return issues


def write_manifest(bundle: Path) -> str:
    """List every file's sha256 in MANIFEST; return the MANIFEST's own sha256."""
    lines = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        lines.append(f"{sha256_file(path)}  {path.relative_to(bundle).as_posix()}\n")
    text = "".join(lines).encode("utf-8")
    (bundle / MANIFEST_NAME).write_bytes(text)
    return hashlib.sha256(text).hexdigest()


def record_run(archive: Path, key: Ed25519PrivateKey, record: Record, redactor: Redactor, *,
               notebook: dict[str, Any] | None = None, html: str | None = None,
               attachments: Path | None = None, on_manifest: Callable[[str], None] | None = None) -> Path:
    """Archive one run and append it to the ledger. Returns the bundle's folder.

    ``on_manifest`` hears the MANIFEST's sha256 before the bundle is renamed into place: the
    in-flight marker keeps it, so a bundle found in place later is known to be this run's.
    """
    run_id = record["run_id"]
    final = run_dir(archive, run_id)
    if final.exists():
        raise EvidenceError(f"run {run_id} is already archived", "run ids are unique; this is a bug")
    partial = archive / RUNS / f".{run_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        manifest_sha = build_bundle(partial, record, redactor, notebook, html, attachments)
        if on_manifest is not None:
            on_manifest(manifest_sha)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    ledger.append(archive, key, _ledger_fields(record, manifest_sha))
    return final


def build_bundle(folder: Path, record: Record, redactor: Redactor, notebook: dict[str, Any] | None,
                 html: str | None, attachments: Path | None) -> str:
    """Write a run's files, scrubbed, into the empty ``folder`` and list them in MANIFEST;
    return the MANIFEST's sha256."""
    if attachments is not None and attachments.is_dir() and any(attachments.iterdir()):
        for source in sorted(p for p in attachments.rglob("*") if p.is_file()):
            target = folder / "attachments" / source.relative_to(attachments)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_scrubbed(target, source.read_bytes(), redactor)
    if notebook is not None:
        _write_scrubbed(folder / "notebook.ipynb", json.dumps(notebook, indent=1), redactor)
    if html is not None:
        _write_scrubbed(folder / "notebook.html", html, redactor)
    text = json.dumps(record, indent=2, sort_keys=False, default=str)
    _write_scrubbed(folder / RECORD_NAME, text + "\n", redactor)
    return write_manifest(folder)


def _ledger_fields(record: Record, manifest_sha: str) -> ledger.RunFields:
    """What the ledger says about a run (``get``: a record read back from an old bundle may lack a key)."""
    fields: ledger.RunFields = {
        "run_id": record["run_id"], "manifest_sha256": manifest_sha, "drill": record.get("drill"),
        "env": record.get("env"), "status": record.get("status"), "kind": record.get("kind"),
        "dry_run": bool(record.get("dry_run")),
        "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
    }
    # An approval is used once, by the run whose step it let through its gate: its use is found where
    # the approval is. A run stopped before (no change reference, a failed steady state) leaves it usable.
    opened = {g.get("gate") for g in record.get("gates") or [] if g.get("step")}
    used = [str(a.get("id")) for a in record.get("approvals") or [] if a.get("gate") in opened]
    if used:
        fields["approvals"] = used
    return fields


def finish_archived(archive: Path, key: Ed25519PrivateKey, run_id: str, manifest_sha: str) -> Path:
    """Finish archiving a bundle already renamed into place whose runner was stopped before it
    was done: enter it in the ledger with the status its own record.json holds (never a fresh
    one), unless the ledger has it already; bring HEAD up to date. Idempotent.

    ``manifest_sha`` is what the runner wrote: a bundle changed since is refused, not signed.
    """
    final = run_dir(archive, run_id)
    issues = check_bundle(final, manifest_sha) if not final.is_symlink() else ["is a symbolic link"]
    if issues:
        raise EvidenceError(f"bundle {final} is not the one its runner wrote: {'; '.join(issues)}",
                            "run drillbook verify, then look at the bundle before removing it")
    ledger.append_once(archive, key, _ledger_fields(load_record(archive, run_id), manifest_sha))
    return final


# --------------------------------------------------------------------------- reading
def latest_runs(archive: Path, dry_runs: bool = True) -> list[dict[str, Any]]:
    """The newest ledger entry per (drill, env), from the ledger alone (fast for large archives).
    With ``dry_runs=False`` only real runs count (what a schedule asks for)."""
    latest: dict[tuple[Any, Any], dict[str, Any]] = {}
    for entry in ledger.read_entries(archive):
        if "run_id" in entry and (dry_runs or not entry.get("dry_run")):  # not a key transition
            latest[(entry.get("drill"), entry.get("env"))] = entry
    return list(latest.values())


def load_record(archive: Path, run_id: str) -> Record:
    """A run's ``record.json`` as it was archived (readers use ``get``: older records may lack newer keys)."""
    path = run_dir(archive, run_id) / RECORD_NAME
    try:
        return cast(Record, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"cannot read {path}: {exc}") from None
