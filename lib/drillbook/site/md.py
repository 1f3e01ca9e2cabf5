"""Small Markdown helpers for the generated pages: escaping, links, tables, badges, times.

Everything a record says is untrusted text (a step title may hold ``|``, ``*`` or ``<``), so
every value goes through ``esc`` before it reaches a page. Links are relative ``.md`` paths so
that ``mkdocs build --strict`` (and Zensical) check every one of them.
"""
from __future__ import annotations

import html
import posixpath
import re
from datetime import datetime, timezone
from typing import Any, Iterable

import yaml

# Characters that start inline Markdown (emphasis, code, links), end a table cell, or open an
# attribute list (``{: onclick=…}`` would put an event handler on the heading or cell).
_SPECIAL = re.compile(r"([\\`*_\[\]|{}])")
# Inside ``<code>`` Markdown still applies: links and attribute lists are made inert with entities.
_CODE_ENTITIES = {"|": "&#124;", "[": "&#91;", "]": "&#93;", "{": "&#123;", "}": "&#125;", "\n": "&#10;", "\r": ""}
STATUS_ICONS = {"passed": "✓", "failed": "✗", "error": "✗", "aborted": "■", "never run": "–"}


def esc(value: Any) -> str:
    """``value`` as inline text: HTML-escaped, Markdown-escaped, on one line."""
    if value is None:
        return ""
    text = html.escape(str(value), quote=False)
    text = _SPECIAL.sub(r"\\\1", text)
    return "<br>".join(part.strip() for part in text.splitlines()) if "\n" in text else text


def code(value: Any) -> str:
    """Inline code that survives any backticks, pipes, brackets, braces or newlines in ``value``
    (HTML, not Markdown)."""
    text = html.escape(str(value), quote=False)
    return f"<code>{text.translate(str.maketrans(_CODE_ENTITIES))}</code>"


def rel(from_page: str, target: str) -> str:
    """The relative link from one docs-relative file to another (both POSIX, e.g. ``status/index.md``)."""
    return posixpath.relpath(target, posixpath.dirname(from_page) or ".")


def link(label: Any, from_page: str, target: str) -> str:
    return f"[{esc(label)}]({rel(from_page, target)})"


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    """A pipe table; cells must already be escaped (``esc``/``code``/``link``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(cell or " " for cell in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def badge(status: str, dry_run: bool = False) -> str:
    """A coloured status label with an icon, so the status never depends on colour alone."""
    icon = STATUS_ICONS.get(status, "?")
    slug = re.sub(r"[^a-z]+", "-", status.lower())
    dry = ' <span class="db-badge db-dry">dry run</span>' if dry_run else ""
    return f'<span class="db-badge db-{slug}">{icon} {html.escape(status)}</span>{dry}'


def flag(text: str, kind: str) -> str:
    """A highlighted word in a table cell (``kind``: overdue, ok, warn)."""
    return f'<span class="db-flag db-{kind}">{html.escape(text)}</span>'


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def when(value: datetime | str | None) -> str:
    """``2026-11-24 05:10 UTC`` (records and schedules are UTC throughout)."""
    moment = parse_time(value) if isinstance(value, str) or value is None else value
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def age(seconds: float) -> str:
    """A coarse age ("3 h ago") next to an absolute time, for people scanning a table."""
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 120:
        text = f"{seconds:.0f} s"
    elif seconds < 7200:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 172800:
        text = f"{seconds / 3600:.0f} h"
    else:
        text = f"{seconds / 86400:.0f} d"
    return f"in {text}" if future else f"{text} ago"


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    return f"{value:.4g}"


def admonition(kind: str, title: str, body: str) -> str:
    """A note box (the ``admonition`` extension, which Zensical supports too)."""
    inner = "\n".join(("    " + line) if line else "" for line in body.strip("\n").splitlines())
    return f'!!! {kind} "{title.replace(chr(34), chr(39))}"\n\n{inner}\n'


def front_matter(*hide: str, title: str | None = None) -> str:
    """Material's (and Zensical's) page options: ``hide: [toc]`` gives wide tables the whole width.

    ``title`` (text from a notebook or record) becomes the page's ``<title>``: without it the
    theme takes the first heading and un-escapes it (Jinja's ``striptags``), so a title holding
    ``</title><script>`` would break out. The theme inserts this value as it is: it is
    HTML-escaped here, then quoted as YAML.
    """
    lines = []
    if title is not None:  # one line, whatever the title holds (newlines, quotes, control characters)
        escaped = html.escape(" ".join(str(title).split()))
        lines.append(yaml.safe_dump({"title": escaped}, allow_unicode=True, default_style='"', width=float("inf")))
    if hide:
        lines.append("hide:\n" + "".join(f"  - {h}\n" for h in hide))
    return "---\n" + "".join(lines) + "---\n\n" if lines else ""


def slug(name: str) -> str:
    """A file name for a notebook or drill name (``index`` would clash with a folder's index page)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "notebook"
    return f"{cleaned}_" if cleaned.lower() == "index" else cleaned
