"""An archive on object storage: runs uploaded, and read back for ``verify``, ``status`` and ``publish``.

A run's bundle is built locally, in the run's private folder, exactly as for a folder archive
(scrubbed, listed in MANIFEST); then every file but MANIFEST is uploaded, objects a cut-short
earlier attempt left that the bundle does not hold are removed, MANIFEST goes last, and only
then is the ledger entry created (``s3ledger``). An upload cut half-way leaves objects no entry
names: ``verify`` reports them, ``status`` and the site never show them as a run, and the run's
in-flight marker makes the next command upload the same bundle again and enter it.

Readers work on a local copy, so ``verify`` and the site run the folder code unchanged:

* ``verify`` downloads every object into a fresh temporary folder (each byte is hashed anew;
  nothing is taken from a cache) and names the object behind each problem;
* ``status`` and ``run --due`` need the ledger alone: its entries are cached (by ETag) under the
  state folder, so a later call fetches only the entries added since;
* ``publish`` keeps a mirror of the whole archive there, refreshed by ETag.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..config.secrets import Redactor
from ..errors import EvidenceError, NotFound
from . import ledger, s3ledger, trust
from . import archive as folder_archive
from .archive import MANIFEST_NAME, RECORD_NAME, RUNS, _ledger_fields, build_bundle, check_bundle
from .record import Record
from .store import S3Archive, S3Store
from .verify import Problem, VerifyReport, verify_archive

STAGING = "bundle"  # in a run's private folder: the bundle, built before it is uploaded
KNOWN_TOP = {ledger.HEAD_NAME, "keys", RUNS, s3ledger.LEDGER_DIR, "freeze"}  # freeze: the kill switch
ETAGS = ".etags.json"


def bundle_url(archive: S3Archive, run_id: str) -> str:
    return f"{archive}/{RUNS}/{run_id}/"


# --------------------------------------------------------------------------- writing
def upload_bundle(store: S3Store, run_id: str, bundle: Path) -> None:
    """Upload a built bundle: its files, then MANIFEST, last (the bundle's commit point before
    the ledger's). Safe to repeat: a retry overwrites what an earlier attempt left."""
    prefix = store.archive.key(RUNS, run_id) + "/"
    before = set(store.list(f"{RUNS}/{run_id}/"))
    files = {prefix + p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}
    manifest = files.pop(prefix + MANIFEST_NAME)
    store.upload(files)
    store.delete(sorted(before - set(files) - {prefix + MANIFEST_NAME}))
    store.put(prefix + MANIFEST_NAME, manifest.read_bytes())


def record_run(archive: S3Archive, key: Ed25519PrivateKey, record: Record, redactor: Redactor, staging: Path, *,
               notebook: dict[str, Any] | None = None, html: str | None = None,
               attachments: Path | None = None, on_manifest: Callable[[str], None] | None = None) -> str:
    """Archive one run on object storage (``staging``: an empty local folder, kept until the run
    is in the ledger so a cut-short upload can be repeated). Returns the bundle's URL."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest_sha = build_bundle(staging, record, redactor, notebook, html, attachments)
    if on_manifest is not None:
        on_manifest(manifest_sha)
    store = S3Store(archive)
    upload_bundle(store, record["run_id"], staging)
    s3ledger.append(store, key, _ledger_fields(record, manifest_sha))
    return bundle_url(archive, record["run_id"])


def preflight(archive: S3Archive) -> None:
    """Fail now, before a drill runs, if the bucket cannot be reached with these credentials."""
    S3Store(archive).list("keys/")


def archive_run(archive: Path | S3Archive, key: Ed25519PrivateKey, record: Record, redactor: Redactor,
                staging: Path, *, notebook: dict[str, Any] | None = None, html: str | None = None,
                attachments: Path | None = None, on_manifest: Callable[[str], None] | None = None) -> Path | str:
    """Archive one run in a folder (``archive.record_run``, as fast as ever) or on object storage."""
    if isinstance(archive, Path):
        return folder_archive.record_run(archive, key, record, redactor, notebook=notebook, html=html,
                                         attachments=attachments, on_manifest=on_manifest)
    return record_run(archive, key, record, redactor, staging, notebook=notebook, html=html,
                      attachments=attachments, on_manifest=on_manifest)


def retry_upload(archive: S3Archive, key: Ed25519PrivateKey, staging: Path, manifest_sha: str) -> str:
    """Finish a run whose upload (or ledger entry) was cut short: upload its bundle again and
    enter it once. Returns the status its record holds. A staged bundle that changed is refused."""
    issues = check_bundle(staging, manifest_sha)
    if issues:
        raise EvidenceError(f"staged bundle {staging} is not the one its runner built: {'; '.join(issues)}",
                            "look at it before removing it")
    record = json.loads((staging / RECORD_NAME).read_text(encoding="utf-8"))
    store = S3Store(archive)
    entries = s3ledger.read_entries(store)
    if not any(e.get("run_id") == record["run_id"] for e in entries):
        upload_bundle(store, record["run_id"], staging)
    s3ledger.append_once(store, key, _ledger_fields(record, manifest_sha))
    return str(record.get("status"))


def resume(archive: S3Archive, key: Ed25519PrivateKey, staging: Path, run_id: str,
           manifest_sha: str | None) -> str | None:
    """Finish archiving a run whose runner stopped after building its bundle; return the status
    entered, or None if it never got that far (the caller records it from its marker)."""
    if not manifest_sha:
        return None
    if staging.is_dir():  # stopped while uploading, or before the entry: upload again, enter once
        return retry_upload(archive, key, staging, manifest_sha)
    store = S3Store(archive)  # stopped after the entry, while removing its run folder
    mine = [e for e in s3ledger.read_entries(store) if e.get("run_id") == run_id]
    if not mine or mine[-1].get("manifest_sha256") != manifest_sha:
        raise EvidenceError(f"run {run_id} built a bundle that is neither staged nor in the ledger of {archive}",
                            "run drillbook verify, then look at the objects under runs/" + run_id)
    s3ledger.advance_head(store, key, mine[-1])
    return str(mine[-1].get("status"))


# --------------------------------------------------------------------------- reading
def cache_dir(archive: S3Archive, state: Path) -> Path:
    """The local copy of one S3 archive under the state folder."""
    name = hashlib.sha256(str(archive).encode("utf-8")).hexdigest()[:16]
    return state / "archive-cache" / name


def _write_ledger(entries: list[dict[str, Any]], folder: Path) -> None:
    """The entries as a folder's ``ledger.jsonl`` (a corrupt one as a line that is not an entry)."""
    lines = [json.dumps(e if "corrupt" not in e else e["corrupt"], sort_keys=True) + "\n" for e in entries]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ledger.LEDGER_NAME).write_text("".join(lines), encoding="utf-8")


def sync_ledger(archive: S3Archive, state: Path) -> Path:
    """A local folder whose ``ledger.jsonl`` is the S3 ledger's, fetching only new entries."""
    folder = cache_dir(archive, state) / "ledger-only"
    folder.mkdir(parents=True, exist_ok=True)
    entries = s3ledger.read_entries(S3Store(archive), folder / "objects")
    _write_ledger(entries, folder)
    return folder


def _others(store: S3Store, listed: dict[str, str]) -> tuple[list[str], list[Problem]]:
    """The archive's objects other than ledger entries, and the objects that have no place there."""
    wanted, strays = [], []
    for key in sorted(listed):
        name = store.archive.relative(key)
        top = name.split("/", 1)[0]
        if top == s3ledger.LEDGER_DIR and s3ledger.seq_of(name):
            continue
        if top in KNOWN_TOP and top != s3ledger.LEDGER_DIR and ".." not in name.split("/"):
            wanted.append(key)
        else:
            strays.append(Problem(None, f"object s3://{store.archive.bucket}/{key} is not part of a drillbook archive"))
    return wanted, strays


def mirror(archive: S3Archive, target: Path, previous: dict[str, str] | None = None) -> list[Problem]:
    """Copy the archive into ``target`` as a folder archive. With ``previous`` (key → ETag of what
    ``target`` holds already) only changed objects are fetched, and objects gone are removed."""
    store = S3Store(archive)
    listed = store.list("")
    if not listed:
        raise EvidenceError(f"no evidence archive at {archive}", "run a drill first, or check the URL")
    wanted, strays = _others(store, listed)
    previous = previous or {}
    # HEAD before the entries: a writer appending meanwhile can make the copy's ledger longer than
    # its HEAD (verify says so; the next verify does not), never shorter (which reads as a truncation).
    head = store.archive.key(ledger.HEAD_NAME)
    store.download([k for k in wanted if k == head], target)
    entries = s3ledger.read_entries(store)
    store.download([k for k in wanted if k != head and previous.get(k) != listed[k]], target)
    for gone in set(previous) - set(wanted):
        path = target / store.archive.relative(gone)
        path.unlink(missing_ok=True)
        while path.parent != target and path.parent.is_dir() and not any(path.parent.iterdir()):
            path = path.parent
            path.rmdir()  # a run folder emptied: the mirror must not show a run that is gone
    _write_ledger(entries, target)
    (target / ETAGS).write_text(json.dumps({k: listed[k] for k in wanted}), encoding="utf-8")
    return strays


def sync(archive: S3Archive, state: Path) -> Path:
    """A mirror of the whole archive under the state folder, refreshed by ETag (for ``publish``)."""
    target = cache_dir(archive, state) / "mirror"
    try:
        previous = json.loads((target / ETAGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    mirror(archive, target, previous if isinstance(previous, dict) else {})
    return target


_LINE = re.compile(r"ledger line (\d+)")


def _name_object(archive: S3Archive, problem: Problem, lines: dict[str, int]) -> Problem:
    """The problem as verify states it for a folder, plus the object it is about (``lines``:
    run id → its entry's line in the copied ledger, which is its object's number)."""
    found = _LINE.search(problem.what)
    line = int(found.group(1)) if found else None
    if line is None and problem.run_id in lines and ("ledger" in problem.what or "signed" in problem.what):
        line = lines[str(problem.run_id)]
    if line is not None:
        return Problem(problem.run_id, f"{problem.what} (object {archive}/{s3ledger.entry_name(line)})")
    if problem.run_id:
        return Problem(problem.run_id, f"{problem.what} (objects {bundle_url(archive, problem.run_id)})")
    if "HEAD" in problem.what:
        return Problem(None, f"{problem.what} (object {archive}/{ledger.HEAD_NAME})")
    return problem


def _trust_file() -> Path | None:
    """The project's trust file: the keys allowed to sign the bucket's entries (None outside a project)."""
    try:
        return trust.trust_path()
    except NotFound:
        return None


def verify(archive: S3Archive, public_keys: list[Path] | None = None) -> VerifyReport:
    """``verify_archive`` on a fresh download of every object, each problem naming its object."""
    with tempfile.TemporaryDirectory(prefix="drillbook-verify-") as folder:
        target = Path(folder)
        strays = mirror(archive, target)
        report = verify_archive(target, public_keys, trust_file=_trust_file())
        lines = {str(e["run_id"]): n for n, e in enumerate(ledger.read_entries(target), 1) if "run_id" in e}
    report.problems = [_name_object(archive, p, lines) for p in report.problems] + strays
    return report
