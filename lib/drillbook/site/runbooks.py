"""Runbook pages: each runbook and drill notebook as a procedure, converted to Markdown.

Inputs and Markdown only (committed notebooks have no outputs, and any are dropped),
so the page is plain Markdown that MkDocs and Zensical both build and search without a plugin.
Headings of the notebook move down one level under the page's own title, and relative links
are rewritten (another notebook → its page, a file under ``docs/`` → that page) or turned
into text, because a strict build rejects a link to a file the site does not have. A notebook's
prose keeps no raw HTML and no link of an unsafe scheme, and its code cannot close its fence:
nothing a notebook says runs as script on the site.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

from ..config import catalog, environments, notebooks, schedule
from ..errors import DrillbookError
from ..evidence.freshness import LastDrill
from .data import Archive, Cache, RunSummary
from .files import PageTree
from .freshness import fresh_section
from .md import badge, code, esc, front_matter, link, rel, table, when
from .paths import DASHBOARD, RUNBOOKS_INDEX, history_page, run_page, runbook_page
from .runbook_index import incident_index, last_drill_section

CONVERT_VERSION = 3  # bump when the conversion changes, so cached pages are redone
LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(\s+\"[^\"]*\")?\s*\)")
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s.*)?$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,5})(\s)")
CODE_SPAN = re.compile(r"(`+)(?:.+?)(?<!`)\1(?!`)")
SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.I)
# Link schemes a page may keep: anything else (javascript:, data:, vbscript:, …) becomes text.
SAFE_SCHEMES = ("http", "https", "mailto")


def _outside_fences(source: str, change: Callable[[str], str]) -> str:
    """Apply ``change`` to every line of Markdown that is not inside a code fence."""
    lines, fence = [], None
    for line in source.splitlines(keepends=True):
        opened = FENCE.match(line)
        if opened and (fence is None or opened.group(1)[0] == fence):
            fence = None if fence else opened.group(1)[0]
        elif fence is None:
            line = change(line)
        lines.append(line)
    return "".join(lines)


def _escape_html(line: str) -> str:
    """``<`` and ``{`` as text outside code spans: a notebook's prose is Markdown, never raw HTML
    nor an attribute list (a ``<script>``, an ``onerror=`` or a ``{: onclick=…}`` would run on
    the site, in its origin)."""
    def inert(text: str) -> str:
        return text.replace("<", "&lt;").replace("{", "&#123;")

    out, end = [], 0
    for span in CODE_SPAN.finditer(line):
        out += [inert(line[end:span.start()]), span.group(0)]
        end = span.end()
    out.append(inert(line[end:]))
    return "".join(out)


def _drop_unsafe_definition(line: str) -> str:
    """A reference-style link definition (``[id]: javascript:…``) with an unsafe scheme becomes text."""
    found = LINK_DEFINITION.match(line)
    if found and not _safe_url(found.group(1)):
        return "\\" + line.lstrip()
    return line


def _safe_url(url: str, image: bool = False) -> bool:
    scheme = SCHEME.match(url)
    if scheme is None:
        return True  # relative: rewritten or turned into text by LinkMapper
    name = scheme.group(1).lower()
    return name in SAFE_SCHEMES or (image and url.lower().startswith("data:image/"))


def inert_markdown(source: str) -> str:
    """A notebook's Markdown cell with no raw HTML and no link of an unsafe scheme."""
    return _outside_fences(source, lambda line: _drop_unsafe_definition(_escape_html(line)))


def code_block(source: str, language: str) -> str:
    """A fenced code block that no line of ``source`` can close: the fence is longer than any
    run of backticks the code holds."""
    longest = max((len(run) for run in re.findall(r"`+", source)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{source}\n{fence}"


def demote_headings(source: str) -> str:
    """``# Title`` → ``## Title`` outside code fences: the page has one H1, its own title."""
    return _outside_fences(source, lambda line: HEADING.sub(r"#\1\2", line))


class LinkMapper:
    """Rewrites a notebook's relative links for its page at ``runbooks/<name>.md``."""

    def __init__(self, project: Path, docs: Path, names: set[str], notebook: Path) -> None:
        self.project, self.docs, self.names, self.folder = project, docs, names, notebook.parent
        self.page = runbook_page(notebook.stem)

    def target(self, url: str) -> str | None:
        """The rewritten URL, or None when the site has nothing to link to."""
        if SCHEME.match(url) or url.startswith("#"):
            return url  # http:, https:, mailto: and anchors are left alone (``rewrite`` drops other schemes)
        # Anchors are dropped: a notebook's heading ids need not match the page's, and a strict
        # Zensical build rejects a link to a missing anchor.
        path = url.partition("#")[0]
        if path.endswith(".ipynb") and Path(path).stem in self.names:
            return rel(self.page, runbook_page(Path(path).stem))
        resolved = (self.folder / path).resolve()
        if resolved.is_file() and resolved.is_relative_to(self.docs.resolve()):
            return rel(self.page, resolved.relative_to(self.docs.resolve()).as_posix())
        return None

    def rewrite(self, source: str) -> str:
        def replace(match: re.Match[str]) -> str:
            bang, label, url, title = match.groups()
            target = self.target(url) if _safe_url(url, image=bool(bang)) else None
            if target is not None:
                return f"{bang}[{label}]({target}{title or ''})"
            return f"{label or 'image'} (`{url}`)"

        return LINK.sub(replace, source)


PARAMETERS_NOTE = ("*Parameters cell: the defaults below. `drillbook run` injects `env`, `dry_run`, `approve`, "
                   "`run_id` and `change`; the environment and `-p name=value` may set the others.*")


def convert(entry: catalog.Entry, mapper: LinkMapper) -> str:
    """The notebook's cells as Markdown (no outputs), with a note above the parameters cell.

    Prose stays Markdown without raw HTML; code and raw cells become fenced blocks they cannot
    close. Everything else a notebook holds is text on the page, never markup.
    """
    nb = notebooks.read_notebook(entry.path)
    found = notebooks.parameters_cell(nb)
    language = str(nb.metadata.get("language_info", {}).get("name") or "python")
    parts = []
    for index, cell in enumerate(nb.cells):
        if found is not None and index == found[0]:
            parts.append(PARAMETERS_NOTE)
        if cell.cell_type == "markdown":
            parts.append(inert_markdown(mapper.rewrite(demote_headings(cell.source))))
        elif cell.source.strip():
            parts.append(code_block(cell.source, language if cell.cell_type == "code" else "text"))
    return "\n\n".join(p.strip("\n") for p in parts).strip() + "\n"


def _procedure(entry: catalog.Entry, mapper: LinkMapper, cache: Cache, names: set[str]) -> str:
    """The converted notebook, from the cache when neither it nor the catalog changed."""
    key = hashlib.sha256(entry.path.read_bytes() + repr((CONVERT_VERSION, sorted(names))).encode()).hexdigest()
    cached = cache.section("runbooks").get(entry.name)
    if cached and cached.get("key") == key:
        return str(cached["markdown"])
    markdown = convert(entry, mapper)
    cache.section("runbooks")[entry.name] = {"key": key, "markdown": markdown}
    return markdown


def _objectives(entry: catalog.Entry, envs: list[environments.Environment]) -> str:
    parts = []
    for name in entry.meta.objectives:
        values = ", ".join(f"{e.name} {e.objectives[name]:g}" for e in envs if name in e.objectives)
        parts.append(f"{code(name)}" + (f" ({esc(values)})" if values else " (no environment sets it)"))
    return "<br>".join(parts) or "none"


def _schedule(entry: catalog.Entry, plan: list[schedule.Entry]) -> str:
    lines = [f"{code(p.cron.text)} on {esc(p.env)} (schedule.yaml)" for p in plan if p.drill == entry.name]
    if entry.meta.schedule:
        lines.append(f"{code(entry.meta.schedule)} (metadata{', overridden by schedule.yaml' if lines else ''})")
    return "<br>".join(lines) or "on demand"


def _latest(entry: catalog.Entry, runs: list[RunSummary], pages: set[str]) -> str:
    page = runbook_page(entry.name)
    latest: dict[str, RunSummary] = {}
    for run in runs:
        latest[run.env] = run
    if not latest:
        return "No run of this notebook is in the archive yet.\n"
    rows = [[esc(env), badge(r.status, r.dry_run), when(r.finished_at),
             link("record", page, run_page(r.run_id)) if r.run_id in pages else "not published"]
            for env, r in sorted(latest.items())]
    return table(["Environment", "Latest", "Finished", "Evidence"], rows) + \
        f"\n{link('Full history and trend charts', page, history_page(entry.name))}.\n"


def runbook_markdown(entry: catalog.Entry, project: Path, procedure: str, runs: list[RunSummary],
                     pages: set[str], envs: list[environments.Environment], plan: list[schedule.Entry],
                     last: LastDrill | None = None, drilled: str = "") -> str:
    meta = entry.meta
    source = entry.path.relative_to(project).as_posix() if entry.path.is_relative_to(project) else entry.path.name
    fields = [("Kind", esc(meta.kind)), ("Owner", esc(meta.owner)), ("Objectives", _objectives(entry, envs)),
              ("Controls", esc(", ".join(meta.controls) or "none")), ("Schedule", _schedule(entry, plan)),
              ("Tags", esc(", ".join(meta.tags) or "none")), ("Timeout", f"{meta.timeout_seconds} s"),
              ("Source", code(source))]
    if meta.kind == "runbook":
        fields[1:1] = [("Severity", esc(meta.severity or "none")), ("Alert", code(meta.alert) if meta.alert else "none"),
                       ("Symptom", esc(meta.symptom or "none"))]
    return "\n".join([
        front_matter(title=meta.title) + f"# {esc(meta.title)}\n", esc(meta.description) + "\n" if meta.description else "",
        table(["Field", "Value"], [[k, v] for k, v in fields]),
        "Try it safely first (mutating steps only print what they would do):\n",
        f"```sh\ndrillbook run {entry.name} --env ENV --dry-run\n```\n",
        "## Latest evidence\n", _latest(entry, runs, pages), drilled,
        fresh_section(last, runbook_page(entry.name), pages) if last else "", "---\n",
        "*The notebook, cell by cell: its explanations and code. Outputs belong to runs: see the evidence.*\n",
        procedure])


def runbooks_index(entries: list[catalog.Entry], skipped: list[str]) -> str:
    page = RUNBOOKS_INDEX
    out = ["# Runbooks and drills\n",
           "Every notebook of the catalog as a procedure: its code and explanations, without outputs. "
           "Operators run runbooks in JupyterLab or with `drillbook run`; drills inject a fault, run the runbook "
           f"and measure the recovery. Their latest results are on the {link('dashboard', page, DASHBOARD)}.\n"]
    if skipped:
        out.append("!!! warning \"Not published\"\n\n    These notebooks failed validation "
                   f"(run `drillbook lint`): {esc(', '.join(skipped))}\n")
    for kind, heading in (("runbook", "Runbooks"), ("drill", "Drills")):
        rows = [[link(e.meta.title, page, runbook_page(e.name)), code(e.name), esc(e.meta.owner),
                 esc(", ".join(e.meta.controls)), code(e.meta.schedule) if e.meta.schedule else "on demand"]
                for e in entries if e.kind == kind]
        out.append(f"## {heading}\n")
        out.append(table(["Title", "Name", "Owner", "Controls", "Schedule"], rows) if rows else "None yet.\n")
        if kind == "runbook":
            out.append(incident_index(entries, page))
    return "\n".join(out)


def write_runbooks(tree: PageTree, project: Path, entries: list[catalog.Entry], skipped: list[str],
                   archive: Archive, pages: set[str], plan: list[schedule.Entry], cache: Cache,
                   fresh: dict[str, LastDrill] | None = None) -> None:
    names = {e.name for e in entries}
    envs = _environments(project)
    runs = archive.by_name()
    for entry in entries:
        mapper = LinkMapper(project, tree.docs, names, entry.path)
        procedure = _procedure(entry, mapper, cache, names)
        drilled = last_drill_section(entry, archive.runs, pages) if entry.kind == "runbook" else ""
        tree.write(runbook_page(entry.name),
                   runbook_markdown(entry, project, procedure, runs.get(entry.name, []), pages, envs, plan,
                                    (fresh or {}).get(entry.name), drilled))
    tree.write(RUNBOOKS_INDEX, runbooks_index(entries, skipped))


def _environments(project: Path) -> list[environments.Environment]:
    """Objective values per environment; an invalid environment file is lint's to report, not ours."""
    found: list[environments.Environment] = []
    for name in environments.environment_names(project):
        try:
            found.append(environments.load_environment(name, project))
        except DrillbookError:
            continue
    return found
