"""Evidence pages: one per chosen run (record, executed notebook, hashes, ledger entry, verify result),
an index with the public keys and the ledger, and the archive's files copied as static files.

The run-time HTML is copied byte for byte, never re-rendered: what the auditor opens is what
the MANIFEST hashed. Full-page runs publish their whole bundle, so anyone can re-hash it from
the site alone; other runs publish their HTML and are listed on their drill's history page.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import EvidenceError
from ..evidence import anchors, keys, ledger
from ..evidence.archive import MANIFEST_NAME, RECORD_NAME, load_record, run_dir
from ..evidence.record import Record
from .data import Archive, RunSummary
from .files import PageTree
from .md import admonition, badge, code, esc, front_matter, link, number, rel, table, when
from .paths import (
    AUDIT_GUIDE,
    EVIDENCE_INDEX,
    HISTORY_INDEX,
    VERIFY_GUIDE,
    history_page,
    key_file,
    run_file,
    run_html,
    run_page,
    runbook_page,
)

PAGE_SUFFIXES = (".md", ".markdown")  # would be built as pages; published with .txt appended
# A browser runs the scripts these hold, in the site's origin: published with .txt appended too,
# except the run-time HTML, which drillbook rendered (no script runs in it) and the site frames.
ACTIVE_SUFFIXES = (".html", ".htm", ".xhtml", ".xht", ".svg", ".xml")
RUN_HTML = "notebook.html"


def published_name(path: str) -> str:
    lower = path.lower()
    if lower.endswith(PAGE_SUFFIXES) or (lower.endswith(ACTIVE_SUFFIXES) and path != RUN_HTML):
        return path + ".txt"
    return path


def read_manifest(bundle: Path) -> list[tuple[str, str]]:
    """(sha256, path) per MANIFEST line; empty when the MANIFEST is missing (verify says so)."""
    try:
        text = (bundle / MANIFEST_NAME).read_text(encoding="utf-8")
    except OSError:
        return []
    pairs = []
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            pairs.append((digest, name))
    return pairs


def pre(text: str) -> str:
    """A preformatted block that no record content can break out of."""
    return f"\n<pre><code>{html.escape(text, quote=False)}</code></pre>\n"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value


# --------------------------------------------------------------------------- run page sections
def _record_table(rec: Record, run: RunSummary) -> str:
    source = rec.get("source") or {}
    commit = source.get("git_commit")
    dirty = " (uncommitted changes)" if source.get("git_dirty") else ""
    versions = ", ".join(f"{k} {v}" for k, v in (rec.get("versions") or {}).items())
    fields = [
        ("Run id", code(run.run_id)), ("Notebook", code(rec.get("notebook") or run.drill)),
        ("Kind", esc(run.kind)), ("Environment", esc(run.env) + (" (production)" if rec.get("production") else "")),
        ("Status", badge(run.status, run.dry_run)), ("Reason", esc(rec.get("reason") or "")),
        ("Started", when(rec.get("started_at"))), ("Finished", when(rec.get("finished_at"))),
        ("Duration", f"{number(rec.get('seconds'))} s" if rec.get("seconds") is not None else ""),
        ("Dry run", "yes" if rec.get("dry_run") else "no"), ("Change reference", esc(rec.get("change") or "none")),
        ("Gates approved in advance", esc(", ".join(rec.get("approve") or []) or "none")),
        ("Mode", esc("interactive (a person in a notebook)" if rec.get("mode") == "interactive" else "drillbook run")),
        ("Operator", esc(rec.get("operator")) + (f" (from {esc(rec.get('operator_source'))})" if rec.get("operator_source") else "")),
        ("Severity", esc(rec.get("severity") or "none")), ("Incident", esc(rec.get("incident") or "none")),
        ("Host", esc(rec.get("host"))),
        ("Source sha256", code(source.get("sha256") or "unknown")),
        ("Git commit", (code(commit) + esc(dirty)) if commit else "not in a git checkout"),
        ("Controls", esc(", ".join(rec.get("controls") or []) or "none")), ("Versions", esc(versions)),
    ]
    return table(["Field", "Value"], [[k, v] for k, v in fields])


def _measures(rec: Record) -> str:
    rows = [[esc(m.get("name")), number(m.get("value")), esc(m.get("unit")), esc(m.get("objective") or ""),
             number(m.get("objective_value")) if m.get("objective_value") is not None else "",
             esc(m.get("verdict")), esc(m.get("detail") or "")] for m in rec.get("measures") or []]
    headers = ["Measure", "Value", "Unit", "Objective", "Objective value", "Verdict", "Detail"]
    return table(headers, rows) if rows else "None recorded.\n"


def _checks(rec: Record) -> str:
    rows = [[esc(c.get("name")), "✓ passed" if c.get("passed") else "✗ failed", esc(c.get("detail") or ""),
             when(c.get("at"))] for c in rec.get("checks") or []]
    return table(["Check", "Result", "Detail", "At"], rows) if rows else "None recorded.\n"


def _steps(rec: Record) -> str:
    rows = [[str(i), esc(s.get("title")), esc(s.get("status")), "yes" if s.get("mutating") else "no",
             esc(s.get("gate") or ""), number(s.get("seconds")) if s.get("seconds") is not None else "",
             esc(s.get("detail") or "")] for i, s in enumerate(rec.get("steps") or [], 1)]
    return table(["#", "Step", "Status", "Mutating", "Gate", "Seconds", "Detail"], rows) if rows else "None recorded.\n"


def _cleanups_and_gates(rec: Record) -> str:
    out = []
    cleanups = [[esc(c.get("title")), esc(c.get("status")), esc(c.get("detail") or "")] for c in rec.get("cleanups") or []]
    out.append(table(["Cleanup", "Status", "Detail"], cleanups) if cleanups else "No cleanups were registered.\n")
    approved = {str(a.get("gate")): a for a in rec.get("approvals") or []}
    gates = [[code(g.get("gate")), esc(g.get("step")), esc(g.get("method") or ""), esc(g.get("how")), when(g.get("at")),
              _approval_cell(approved.get(str(g.get("gate"))))] for g in rec.get("gates") or []]
    out.append(table(["Gate", "Step", "Method", "How it was passed", "Confirmed at", "Approval"], gates) if gates
               else "No gate was passed.\n")
    return "\n".join(out)


def _approval_cell(approval: Mapping[str, Any] | None) -> str:
    """Who approved the gate, with which key, for which plan (four eyes; ``evidence/approvals.py``)."""
    if not approval:
        return "—"
    return (f"{code(approval.get('id'))} by **{esc(approval.get('approver'))}** "
            f"(key {code(str(approval.get('key_fingerprint'))[:23])}…) at {when(approval.get('approved_at'))}<br>"
            f"plan {code(str(approval.get('plan_sha256'))[:16])} of dry run {code(approval.get('dry_run'))}, "
            f"valid until {when(approval.get('expires_at'))}")


def _parameters(rec: Record) -> str:
    rows = [[code(k), code(_json(v))] for k, v in (rec.get("parameters") or {}).items()]
    note = "Secret values never appear: the runner replaced them with `[REDACTED:name]` before archiving.\n\n"
    return note + (table(["Parameter", "Value"], rows) if rows else "None.\n")


def _failure(rec: Record) -> str:
    cell, error = rec.get("failing_cell"), rec.get("error")
    if not cell and not error:
        return ""
    out = ["## What went wrong\n"]
    if cell:
        out.append(f"Failing cell: In [{esc(cell.get('execution_count'))}] (cell {esc(cell.get('index'))}), "
                   f"starting {code(cell.get('source_first_line') or '')}; it is outlined in red in the notebook below.\n")
    if isinstance(error, dict):
        out.append(f"{code(error.get('type'))}: {esc(error.get('message'))}\n")
        if error.get("traceback"):
            out.append(pre(str(error["traceback"])))
    return "\n".join(out)


def _files(run_id: str, manifest: list[tuple[str, str]], published: set[str], manifest_sha: str) -> str:
    page = run_page(run_id)
    rows = []
    for digest, name in manifest:
        target = published_name(name)
        label = link(name, page, run_file(run_id, target)) if target in published else esc(name)
        rows.append([code(digest), label])
    head = (f"The bundle's {link('MANIFEST', page, run_file(run_id, MANIFEST_NAME))} lists the sha256 of "
            f"every file; the ledger entry below holds the sha256 of the MANIFEST itself: {code(manifest_sha)}.\n")
    return head + "\n" + (table(["sha256", "File"], rows) if rows else "The MANIFEST is missing.\n")


def _verify_box(run: RunSummary, archive: Archive, entry: dict[str, Any]) -> str:
    problems = archive.verify.run_problems.get(run.run_id, []) + archive.verify.archive_problems
    if not problems:
        return admonition("success", "verify passes for this run",
                          f"At build time every file matched the MANIFEST, the MANIFEST matched ledger entry "
                          f"#{esc(entry.get('seq'))}, the hash chain was unbroken and the entry's ed25519 signature "
                          f"checked against key {code(entry.get('key_id'))}.")
    return admonition("failure", "verify fails for this run", "\n".join(f"- {esc(p)}" for p in problems))


def _resume_links(run: RunSummary, rec: Record, archive: Archive, page: str) -> list[str]:
    """Which run this one resumes, and which run resumed it (both have pages: ``incidents.page_runs``)."""
    out = []
    if rec.get("resumes") in archive.resumed_by:
        out.append(f"Resumes run {link(rec.get('resumes'), page, run_page(str(rec.get('resumes'))))}"
                   + (" (its notebook had changed: resumed with --allow-changed)" if rec.get("resume_source_changed") else "")
                   + ".\n")
    if run.run_id in archive.resumed_by:
        resumer = archive.resumed_by[run.run_id]
        out.append(admonition("info", "Resumed", f"This run was resumed by run {link(resumer, page, run_page(resumer))}."))
    return out


def run_markdown(run: RunSummary, rec: Record, archive: Archive, manifest: list[tuple[str, str]],
                 published: set[str], has_entry_page: bool, key_ids: set[str]) -> str:
    page = run_page(run.run_id)
    entry = archive.entries.get(run.run_id, {})
    notebook = run_file(run.run_id, "notebook.html")
    out = [front_matter(title=f"{run.title} on {run.env}") + f"# {esc(run.title)} on {esc(run.env)}\n",
           f"{badge(run.status, run.dry_run)} {esc(run.reason or '')} · finished {when(run.finished_at)} · "
           f"{link('history', page, history_page(run.drill))}"
           + (f" · {link('procedure', page, runbook_page(run.drill))}" if has_entry_page else "") + "\n",
           *_resume_links(run, rec, archive, page),
           _verify_box(run, archive, entry), "## Record\n", _record_table(rec, run),
           "## Measures against objectives\n", _measures(rec), "## Checks\n", _checks(rec),
           "## Steps\n", _steps(rec), "## Cleanups and gates\n", _cleanups_and_gates(rec), _failure(rec),
           "## Parameters\n", _parameters(rec), "## Executed notebook\n"]
    if "notebook.html" in published:
        out.append(f"Rendered once, when the run finished ({link('open it on its own', page, notebook)}; "
                   f"{link('record.json', page, run_file(run.run_id, RECORD_NAME))} holds everything above).\n")
        # sandbox: the notebook's outputs may hold scripts; they must not run in the site's origin.
        out.append(f'<iframe class="db-notebook" src="{html.escape(rel(page, notebook))}" sandbox="" '
                   f'title="Executed notebook of run {html.escape(run.run_id)}" loading="lazy"></iframe>\n')
    else:
        out.append("This bundle has no rendered notebook (the runner was killed before one could be made safely).\n")
    out += ["## Files and hashes\n", _files(run.run_id, manifest, published, str(entry.get("manifest_sha256"))),
            "## Ledger entry\n",
            f"Entry #{esc(entry.get('seq'))} of {link('ledger.jsonl', page, 'evidence/ledger.jsonl')}, signed by "
            f"{link(str(entry.get('key_id')), page, key_file(str(entry.get('key_id'))))}:"
            if str(entry.get("key_id")) in key_ids else f"Entry #{esc(entry.get('seq'))} (its key is not published):",
            pre(json.dumps(entry, indent=1, sort_keys=True)),
            f"To check all of this without drillbook, follow {link('verifying evidence', page, VERIFY_GUIDE)}.\n"]
    return "\n".join(out)


# --------------------------------------------------------------------------- writing
def _publish_bundle(tree: PageTree, bundle: Path, run_id: str, manifest: list[tuple[str, str]]) -> set[str]:
    """Copy the bundle's files (those its MANIFEST lists, plus the MANIFEST); return what was published."""
    published = set()
    for name in [n for _, n in manifest] + [MANIFEST_NAME]:
        if _inside(bundle, name) and tree.copy(run_file(run_id, published_name(name)), bundle / name):
            published.add(published_name(name))
    return published


def _inside(bundle: Path, name: str) -> bool:
    """A MANIFEST path that stays inside the bundle: a tampered MANIFEST must not publish other files."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        return False
    return (bundle / name).resolve().is_relative_to(bundle.resolve())  # no symlinked folder either


def write_runs(tree: PageTree, archive: Archive, full: set[str], catalogued: set[str], key_ids: set[str]) -> None:
    for run in archive.runs:
        bundle = run_dir(archive.root, run.run_id)
        if run.has_html:
            tree.copy(run_html(run.run_id), bundle / "notebook.html")
        if run.run_id not in full:
            continue
        try:
            rec = load_record(archive.root, run.run_id)
        except EvidenceError:
            continue  # full_page_runs skips unreadable runs; the bundle vanished since: verify names it
        manifest = read_manifest(bundle)
        published = _publish_bundle(tree, bundle, run.run_id, manifest)
        tree.write(run_page(run.run_id), run_markdown(run, rec, archive, manifest, published, run.drill in catalogued,
                                                        key_ids))


def publish_keys(tree: PageTree, archive: Archive) -> dict[str, Path]:
    """Copy the archive's public keys; key id (recomputed from the key itself) → its file."""
    published = {}
    for path in archive.key_files:
        try:
            found = keys.load_public_keys(archive.root, [path])
        except EvidenceError:
            continue  # not a key: verify reports entries signed by an unknown key
        for kid in found:
            if tree.copy(key_file(kid), path):
                published[kid] = path
    return published


def _keys_section(archive: Archive, published: dict[str, Path]) -> str:
    page = EVIDENCE_INDEX
    signed: dict[str, int] = {}
    for entry in archive.entries.values():
        signed[str(entry.get("key_id"))] = signed.get(str(entry.get("key_id")), 0) + 1
    out = ["## Public keys\n",
           "Every ledger entry names the ed25519 key that signed it. Compare these with the copy your organisation "
           "keeps: a key published next to the evidence proves only that the evidence is self-consistent.\n"]
    for kid, path in sorted(published.items()):
        count = signed.get(kid, 0)
        out.append(f"### Key {code(kid)}\n\n{link(kid + '.pem', page, key_file(kid))} · signed "
                   f"{count} ledger entr{'y' if count == 1 else 'ies'}.\n")
        out.append(pre(path.read_text(encoding="ascii", errors="replace")))
    if not published:
        out.append("No public key yet.\n")
    return "\n".join(out)


def _problems_section(archive: Archive) -> str:
    v = archive.verify
    if not v.checked:
        return admonition("info", "No evidence archive yet", "Run a drill, then publish again.")
    if v.ok:
        return admonition("success", "drillbook verify passes",
                          f"{v.runs} run(s): ledger chain, signatures, HEAD and every file hash intact at build time.")
    lines = [f"- {esc(p)}" for p in v.archive_problems]
    lines += [f"- {code(run_id)}: {esc(p)}" for run_id, problems in sorted(v.run_problems.items()) for p in problems]
    return admonition("failure", "drillbook verify fails", "\n".join(lines))


def evidence_index(tree: PageTree, archive: Archive, full: set[str], published: dict[str, Path]) -> str:
    page = EVIDENCE_INDEX
    out = [front_matter("toc") + "# Evidence\n",
           "Every run leaves a signed, hash-chained bundle in the archive. This page states whether the whole "
           "archive verified when the site was built, and publishes what you need to check it yourself.\n",
           _problems_section(archive), _keys_section(archive, published), "## Ledger\n"]
    for name in (ledger.LEDGER_NAME, ledger.HEAD_NAME):
        if (archive.root / name).is_file():
            tree.copy(f"evidence/{name}", archive.root / name)
    anchor = anchors.site_document(archive.root)  # the head this publish saw: `verify --against` holds to it
    if anchor is not None:
        tree.write(anchors.SITE_FILE, anchor)
    if (archive.root / ledger.LEDGER_NAME).is_file():
        head = ledger.read_head(archive.root) or {}
        out.append(f"{link('ledger.jsonl', page, 'evidence/ledger.jsonl')} ({len(archive.entries)} entries) and "
                   + (f"{link('HEAD', page, 'evidence/HEAD')} (seq {esc(head.get('seq'))}, hash {code(head.get('hash'))}). "
                      if (archive.root / ledger.HEAD_NAME).is_file() else "no HEAD. ")
                   + f"How to check them: {link('verifying evidence', page, VERIFY_GUIDE)}.\n")
        if anchor is not None:
            out.append(f"{link('anchor.json', page, anchors.SITE_FILE)} is the head this publish saw: keep a copy, and "
                       "`drillbook verify --against anchor.json` later names any entry removed or rewritten since "
                       f"({link('checking a published site', page, AUDIT_GUIDE)}).\n")
    else:
        out.append("No ledger yet.\n")
    chosen = sorted((r for r in archive.runs if r.run_id in full), key=lambda r: r.seq, reverse=True)
    out.append("## Runs with a full evidence page\n")
    out.append(table(["#", "Finished", "Notebook", "Environment", "Status", "Evidence", "Verified"],
                     [[str(r.seq), when(r.finished_at), link(r.drill, page, history_page(r.drill)), esc(r.env),
                       badge(r.status, r.dry_run), link("record", page, run_page(r.run_id)),
                       "✓" if archive.verify.run_ok(r.run_id) else "✗"] for r in chosen]) if chosen else "None yet.\n")
    out.append(f"Older runs ({len(archive.runs) - len(chosen)}) are listed, with their executed notebooks, on each "
               f"drill's history page: {link('drill history', page, HISTORY_INDEX)}.\n")
    return "\n".join(out)


def write_evidence(tree: PageTree, archive: Archive, full: set[str], catalogued: set[str]) -> set[str]:
    """Write the evidence pages; return the run ids that got a full page (other pages link only to those)."""
    published = publish_keys(tree, archive)
    write_runs(tree, archive, full, catalogued, set(published))
    pages = {r.run_id for r in archive.runs if tree.produced(run_page(r.run_id))}
    tree.write(EVIDENCE_INDEX, evidence_index(tree, archive, pages, published))
    return pages
