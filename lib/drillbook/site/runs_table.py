"""Every run of one drill in a single static HTML table (``status/history/<name>-runs.html``).

A drill's history page shows its latest runs as Markdown; the full list, which grows with the
archive, is plain HTML that MkDocs and Zensical copy without parsing, rendering or indexing it,
so a 1,000-run history costs the build one file copy. Links are relative to this file and assume
``use_directory_urls: true`` (mkdocs.yml), where ``evidence/runs/<id>/index.md`` is served at
``evidence/runs/<id>/``.
"""
from __future__ import annotations

import html
import posixpath

from ..runner.render import PAGE_CSS
from .data import Archive, RunSummary
from .files import PageTree
from .md import when
from .paths import history_page, run_html, run_page, runs_table


def _href(from_file: str, target: str) -> str:
    """The built URL of ``target`` (a docs file) relative to the static file ``from_file``."""
    if target.endswith("/index.md"):
        target = target.removesuffix("index.md")
    elif target.endswith(".md"):
        target = target.removesuffix(".md") + "/"
    return html.escape(posixpath.relpath(target, posixpath.dirname(from_file)) + ("/" if target.endswith("/") else ""))


def _measures(run: RunSummary) -> str:
    parts = []
    for m in run.objective_measures():
        against = f" {'≤' if m.better == 'lower' else '≥'} {m.objective_value:.4g} ({m.verdict})" \
            if m.objective_value is not None else " (no objective set)"
        parts.append(f"{m.name} {m.value:.4g} {m.unit}{against}")
    return html.escape("; ".join(parts))


def _row(run: RunSummary, here: str, tree: PageTree, archive: Archive) -> str:
    links = []
    if tree.produced(run_page(run.run_id)):
        links.append(f'<a href="{_href(here, run_page(run.run_id))}">record</a>')
    if tree.produced(run_html(run.run_id)):
        links.append(f'<a href="{_href(here, run_html(run.run_id))}">notebook</a>')
    status = html.escape(run.status) + (" (dry run)" if run.dry_run else "")
    cells = [str(run.seq), when(run.finished_at), html.escape(run.env),
             f'<span class="status status-{html.escape(run.status)}">{status}</span>',
             html.escape(run.reason or ""), _measures(run), " · ".join(links) or "not published",
             "✓" if archive.verify.run_ok(run.run_id) else "✗"]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def runs_table_html(name: str, title: str, runs: list[RunSummary], tree: PageTree, archive: Archive) -> str:
    here = runs_table(name)
    head = "".join(f"<th>{h}</th>" for h in ("#", "Finished", "Environment", "Status", "Reason",
                                             "Measured vs objective", "Evidence", "Verified"))
    rows = "\n".join(_row(r, here, tree, archive) for r in reversed(runs))
    heading = html.escape(f"Every run: {title}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>'
        f"<style>{PAGE_CSS}</style></head><body>\n<h1>{heading}</h1>\n"
        f'<p>{len(runs)} run(s), newest first. <a href="{_href(here, history_page(name))}">Back to the history '
        "and its charts</a>.</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n</body></html>\n"
    )
