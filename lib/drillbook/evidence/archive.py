"""The evidence archive: run bundles, their MANIFEST, and verification against the ledger.

    <archive>/ledger.jsonl, HEAD, keys/<key_id>.pem
    <archive>/runs/<run_id>/record.json, notebook.ipynb, notebook.html, attachments/, MANIFEST

A bundle is written to a hidden ``.partial`` folder, scrubbed of secrets, listed in MANIFEST,
renamed into place in one step and only then entered in the ledger. A runner stopped after the
rename leaves a bundle that ``finish_archived`` enters in the ledger later (see ``inflight``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import keys, ledger
from .errors import EvidenceError
from .secrets import Redactor

MANIFEST_NAME = "MANIFEST"
RUNS = "runs"
TEXT_SUFFIXES = {".json", ".ipynb", ".html", ".txt", ".log", ".md", ".csv", ".svg", ".yaml", ".jsonl", ".out"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_manifest(bundle: Path) -> str:
    """List every file's sha256 in MANIFEST; return the MANIFEST's own sha256."""
    lines = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        lines.append(f"{sha256_file(path)}  {path.relative_to(bundle).as_posix()}\n")
    text = "".join(lines).encode("utf-8")
    (bundle / MANIFEST_NAME).write_bytes(text)
    return hashlib.sha256(text).hexdigest()


def record_run(archive: Path, key: Ed25519PrivateKey, record: dict[str, Any], redactor: Redactor, *,
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
        if attachments is not None and attachments.is_dir() and any(attachments.iterdir()):
            for source in sorted(p for p in attachments.rglob("*") if p.is_file()):
                target = partial / "attachments" / source.relative_to(attachments)
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_scrubbed(target, source.read_bytes(), redactor)
        if notebook is not None:
            _write_scrubbed(partial / "notebook.ipynb", json.dumps(notebook, indent=1), redactor)
        if html is not None:
            _write_scrubbed(partial / "notebook.html", html, redactor)
        text = json.dumps(record, indent=2, sort_keys=False, default=str)
        _write_scrubbed(partial / "record.json", text + "\n", redactor)
        manifest_sha = write_manifest(partial)
        if on_manifest is not None:
            on_manifest(manifest_sha)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    ledger.append(archive, key, _ledger_fields(record, manifest_sha))
    return final


def _ledger_fields(record: dict[str, Any], manifest_sha: str) -> dict[str, Any]:
    return {
        "run_id": record["run_id"], "manifest_sha256": manifest_sha, "drill": record.get("drill"),
        "env": record.get("env"), "status": record.get("status"), "kind": record.get("kind"),
        "dry_run": bool(record.get("dry_run")),
        "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
    }


def finish_archived(archive: Path, key: Ed25519PrivateKey, run_id: str, manifest_sha: str) -> Path:
    """Finish archiving a bundle already renamed into place whose runner was stopped before it
    was done: enter it in the ledger with the status its own record.json holds (never a fresh
    one), unless the ledger has it already; bring HEAD up to date. Idempotent.

    ``manifest_sha`` is what the runner wrote: a bundle changed since is refused, not signed.
    """
    final = run_dir(archive, run_id)
    issues = _check_bundle(final, manifest_sha) if not final.is_symlink() else ["is a symbolic link"]
    if issues:
        raise EvidenceError(f"bundle {final} is not the one its runner wrote: {'; '.join(issues)}",
                            "run drillbook verify, then look at the bundle before removing it")
    ledger.append_once(archive, key, _ledger_fields(load_record(archive, run_id), manifest_sha))
    return final


# --------------------------------------------------------------------------- verifying
@dataclass
class Problem:
    run_id: str | None
    what: str

    def __str__(self) -> str:
        return f"{self.run_id}: {self.what}" if self.run_id else self.what


@dataclass
class VerifyReport:
    runs: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_bundle(bundle: Path, manifest_sha: str) -> list[str]:
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
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    for name in sorted(set(listed) - present):
        issues.append(f"modified: {name} was removed")
    for name in sorted(present - set(listed)):
        issues.append(f"modified: {name} was added after archiving")
    for name in sorted(set(listed) & present):
        if sha256_file(bundle / name) != listed[name]:
            issues.append(f"modified: {name} changed")
    return issues


def _check_chain(entries: list[dict[str, Any]], public: dict[str, Ed25519PublicKey]) -> list[Problem]:
    problems = []
    prev = ledger.GENESIS
    for index, entry in enumerate(entries):
        if "corrupt" in entry:
            problems.append(Problem(None, f"ledger line {index + 1} is not valid JSON"))
            prev = None
            continue
        run_id = entry.get("run_id")
        if entry.get("seq") != index + 1 or (prev is not None and entry.get("prev") != prev):
            problems.append(Problem(run_id, f"reordered: ledger line {index + 1} holds seq {entry.get('seq')} "
                                            "and does not follow the entry before it"))
        if ledger.entry_hash(entry) != entry.get("hash"):
            problems.append(Problem(run_id, "modified: its ledger entry was altered"))
        pub = public.get(str(entry.get("key_id")))
        if pub is None:
            problems.append(Problem(run_id, f"signed by unknown key {entry.get('key_id')}"))
        elif not keys.verify_signature(pub, str(entry.get("hash")).encode("ascii"), str(entry.get("sig"))):
            problems.append(Problem(run_id, "bad signature on its ledger entry"))
        prev = entry.get("hash")
    return problems


def _check_head(archive: Path, entries: list[dict[str, Any]], public: dict[str, Ed25519PublicKey]) -> list[Problem]:
    head = ledger.read_head(archive)
    good = [e for e in entries if "corrupt" not in e]
    if head is None:
        return [Problem(None, "HEAD is missing: the ledger's end cannot be confirmed")] if good else []
    pub = public.get(str(head.get("key_id")))
    signed = {k: head.get(k) for k in ("seq", "hash", "key_id")}
    if pub is None or not keys.verify_signature(pub, ledger.canonical(signed), str(head.get("sig"))):
        return [Problem(None, "HEAD signature is invalid")]
    last = good[-1] if good else None
    if last is None or head["seq"] > len(entries):
        ends = last["seq"] if last else 0
        return [Problem(None, f"truncated: HEAD records {head['seq']} runs but the ledger ends at {ends}")]
    if last["seq"] != head["seq"] or last["hash"] != head["hash"]:
        return [Problem(None, f"ledger end does not match HEAD (seq {head['seq']})")]
    return []


def verify_archive(archive: Path, public_keys: list[Path] | None = None, workers: int = 8) -> VerifyReport:
    """Recompute every hash and signature. With ``public_keys`` only those keys are trusted."""
    if not archive.exists():
        raise EvidenceError(f"no evidence archive at {archive}", "run a drill first, or pass --archive")
    public = keys.load_public_keys(archive, public_keys)
    entries = ledger.read_entries(archive)
    report = VerifyReport(runs=len([e for e in entries if "corrupt" not in e]))
    report.problems.extend(_check_chain(entries, public))
    report.problems.extend(_check_head(archive, entries, public))
    in_ledger = [(e["run_id"], e.get("manifest_sha256", "")) for e in entries if "run_id" in e]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda item: _check_bundle(run_dir(archive, item[0]), item[1]), in_ledger)
        for (run_id, _), issues in zip(in_ledger, results):
            report.problems.extend(Problem(run_id, issue) for issue in issues)
    known = {run_id for run_id, _ in in_ledger}
    runs_root = archive / RUNS
    if runs_root.is_dir():
        for child in sorted(runs_root.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name not in known:
                report.problems.append(Problem(child.name, "added outside the ledger"))
    return report


# --------------------------------------------------------------------------- reading
def latest_runs(archive: Path, dry_runs: bool = True) -> list[dict[str, Any]]:
    """The newest ledger entry per (drill, env), from the ledger alone (fast for large archives).
    With ``dry_runs=False`` only real runs count (what a schedule asks for)."""
    latest: dict[tuple[Any, Any], dict[str, Any]] = {}
    for entry in ledger.read_entries(archive):
        if "corrupt" not in entry and (dry_runs or not entry.get("dry_run")):
            latest[(entry.get("drill"), entry.get("env"))] = entry
    return list(latest.values())


def load_record(archive: Path, run_id: str) -> dict[str, Any]:
    path = run_dir(archive, run_id) / "record.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"cannot read {path}: {exc}") from None
