"""Hardening: secrets a kernel resolves on its own, every encoding of a secret, the change guard on
cleanups, and hostile notebook text on the published site.

The secret and site tests run real notebooks through the real runner (`drillbook run`) in a project
made by bench/site_build.py (the same one tests/site/test_site.py publishes), then publish it with MkDocs.
"""
from __future__ import annotations

import base64
import functools
import html
import json
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import drillbook
import markupsafe
import pytest
from conftest import FIXTURES, Project, cli
from drillbook.config.secrets import Redactor
from drillbook.errors import ChangeRequired
from sitesupport import CHROMIUM, CHROMIUM_FLAGS, QuietHandler, require_browser, site_build

MARKER = "[REDACTED:db]"


# --------------------------------------------------------------------------- every encoding
def _payloads(value: str) -> dict[str, str]:
    """``value`` as code in a notebook may print, log, display or attach it."""
    return {
        "raw": value, "json": json.dumps({"password": value}), "json, not ASCII": json.dumps(value, ensure_ascii=False),
        "repr": repr(value), "repr in a list": repr([value]), "URL-encoded": quote(value, safe=""),
        "URL path": quote(value), "form body": quote_plus(value),
        "html.escape": html.escape(value), "html.escape, no quotes": html.escape(value, quote=False),
        "MarkupSafe (Jinja)": str(markupsafe.escape(value)), "escaped twice": html.escape(html.escape(value)),
        "repr in a JSON log": json.dumps({"error": f"bad password {value!r}"}),
        "HTML in a JSON output": json.dumps({"text/html": f"<b>{html.escape(value)}</b>"}),
    }


@pytest.mark.parametrize("value", ['pw<&>"\'\\é-{core}', "plain-{core}", "pa ss+wo/rd?{core}=1"])
def test_every_text_encoding_of_a_secret_is_scrubbed(value: str) -> None:
    core = secrets.token_hex(8)
    value = value.format(core=core)
    redactor = Redactor()
    redactor.add("db", value)
    for how, payload in _payloads(value).items():
        scrubbed = redactor.scrub(f"before {payload} after")
        assert core not in scrubbed, f"{how}: {scrubbed}"
        assert MARKER in scrubbed, how


@pytest.mark.parametrize("prefix", ["", "a", "app:", "kubernetes-secret:"])
def test_base64_of_a_secret_is_scrubbed_at_any_offset(prefix: str) -> None:
    """A Basic auth header (``user:password``) or ``kubectl get secret -o yaml`` prints the value
    base64-encoded, at whatever offset its prefix puts it."""
    value = f"s3cr3t-{secrets.token_hex(8)}"
    redactor = Redactor()
    redactor.add("db", value)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        payload = encode((prefix + value + "\n").encode()).decode()
        scrubbed = redactor.scrub(payload)
        before, marker, after = scrubbed.partition(MARKER)
        assert marker, (prefix, payload)
        # What is left is the prefix's own characters and the tail, plus at most one character
        # on each side that mixes the secret's bits with its neighbours'.
        assert len(before) <= len(prefix) * 4 // 3 + 1 and len(after) <= 4 + 1, (prefix, scrubbed)


def test_short_base64_fragments_are_not_patterns() -> None:
    """A short secret's base64 would match by chance inside an image's base64: it is not scrubbed."""
    redactor = Redactor()
    redactor.add("pin", "4321")
    image = base64.b64encode(os.urandom(300_000)).decode()
    assert redactor.scrub(image) == image.replace("4321", "[REDACTED:pin]")


# --------------------------------------------------------------------------- secrets a kernel resolves
def _project(tmp_path: Path, *notebooks: str) -> Path:
    root = site_build.make_project(tmp_path / "project")
    for name in notebooks:
        shutil.copy(FIXTURES / "notebooks" / name, root / "notebooks" / "drills" / name)
    return root


def _files(*folders: Path) -> dict[Path, str]:
    return {p: p.read_bytes().decode("utf-8", "replace") for folder in folders for p in folder.rglob("*") if p.is_file()}


def test_secrets_resolved_only_in_the_kernel_reach_neither_the_bundle_nor_the_site(tmp_path: Path) -> None:
    """undeclared_secret.ipynb reads a ``file:`` and an ``env:`` secret the environment does not
    declare, plus a scratch ``file:`` secret it deletes at once (so the runner cannot resolve it
    again), and prints, displays, logs, attaches and raises them in every encoding it can."""
    root = _project(tmp_path, "undeclared_secret.ipynb")
    cores = {name: secrets.token_hex(8) for name in ("file", "env", "scratch")}
    values = {name: f"Uv{core}<&>\"'\\z" for name, core in cores.items()}
    (root / "undeclared.txt").write_text(values["file"] + "\n")
    (root / "scratch.txt").write_text(values["scratch"] + "\n")
    env = {"DRILLBOOK_HOME": str(tmp_path / "home"), "DRILLBOOK_UNDECLARED": values["env"]}
    run = cli(root, "run", "undeclared_secret", "--env", "local", env=env)
    assert run.code == 1, run.output  # the notebook raises on purpose, after leaking everywhere it can
    assert not (root / "scratch.txt").exists()
    published = cli(root, "publish", "--full-runs", "3", env=env)
    assert published.code == 0, published.output

    basic = {name: base64.b64encode(f"app:{value}".encode()).decode() for name, value in values.items()}
    files = _files(root / "reports" / "evidence", root / "site", root / "docs")
    bundle = next((root / "reports" / "evidence" / "runs").glob("*-undeclared_secret-*"))
    assert {"record.json", "notebook.ipynb", "notebook.html", "log-0.txt", "log-2.txt"} <= {p.name for p in files
                                                                                           if bundle in p.parents}
    for text, where in [(run.stdout, "stdout"), (run.stderr, "stderr"), (published.output, "publish")] + \
                       [(text, str(path)) for path, text in files.items()]:
        for name, core in cores.items():
            assert core not in text, f"the {name} secret leaked into {where}"
            assert basic[name][8:-4] not in text, f"the {name} secret leaked base64-encoded into {where}"

    # Every channel was exercised and scrubbed, not merely absent because nothing ran.
    notebook = json.loads((bundle / "notebook.ipynb").read_text())
    outputs = json.dumps([c.get("outputs") for c in notebook["cells"]], ensure_ascii=False)
    for ref in ("file:undeclared.txt", "env:DRILLBOOK_UNDECLARED", "file:scratch.txt"):
        marker = f"[REDACTED:{ref}]"
        assert outputs.count(marker) >= 8, (ref, outputs.count(marker))
    assert re.search(r"Authorization: Basic YXBwO[A-Za-z0-9+/]{0,3}\[REDACTED:file:undeclared.txt\]", outputs)
    for kind in ('"name": "stderr"', "text/html", "text/markdown", "application/json", '"ename": "RuntimeError"'):
        assert kind in outputs or kind in json.dumps(notebook), kind
    record = json.loads((bundle / "record.json").read_text())
    assert [s["title"] for s in record["steps"]] == ["Use [REDACTED:file:undeclared.txt]",
                                                     "Use [REDACTED:env:DRILLBOOK_UNDECLARED]",
                                                     "Use [REDACTED:file:scratch.txt]"]
    assert (bundle / "attachments" / "log-2.txt").read_text().startswith("password=[REDACTED:file:scratch.txt] html=")
    assert (bundle / "attachments" / "direct-2.log").read_text() == "written directly: [REDACTED:file:scratch.txt]"
    assert "[REDACTED:file:undeclared.txt]" in html.unescape((bundle / "notebook.html").read_text())


def test_the_runner_scrubs_a_secret_the_kernel_resolved_before_it_died(project: Project) -> None:
    """The kernel journals the reference of an undeclared secret, writes the value straight into an
    attachment and dies before it could scrub it: the runner resolves the reference again."""
    value = f"Dd{secrets.token_hex(8)}"
    (project.root / "undeclared.txt").write_text(value + "\n")
    project.add_notebook("undeclared_then_dies.ipynb")
    result = cli(project, "run", "undeclared_then_dies", "--env", "local")
    assert result.code == 1 and "the kernel died during execution" in result.stdout, result.output
    bundle = project.run_dirs()[0]
    assert (bundle / "attachments" / "dump.log").read_text() == "password=[REDACTED:file:undeclared.txt]"
    for path, text in _files(project.archive).items():
        assert value not in text, path


# --------------------------------------------------------------------------- the change guard on cleanups


@pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")
def test_production_cleanups_need_the_change_reference_too(project: Project, run_dir: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    project.write_env("prod", "production: true\n")
    ran: list[str] = []
    drill = drillbook.start(env="prod", dry_run=False)
    drill.cleanup(lambda: ran.append("restore"), "Restore the old primary")  # mutating by default
    drill.cleanup(lambda: ran.append("report"), "Collect the logs", mutating=False)
    with pytest.raises(ChangeRequired) as refused:
        drill.step("Promote", lambda: ran.append("promote"), mutating=True)
    drill.fail(refused.value)  # what the kernel's cell hook does after the cell raised
    assert ran == ["report"]  # the read-only cleanup ran; the mutating one did not
    cleanups = json.loads((run_dir / "journal.json").read_text())["cleanups"]
    assert [(c["title"], c["status"]) for c in cleanups] == [("Collect the logs", "passed"),
                                                              ("Restore the old primary", "refused")]
    assert cleanups[1]["detail"] == ("cleanup 'Restore the old primary' changes production environment 'prod' "
                                     "and no change reference was given")
    assert "✗ cleanup Restore the old primary not run: cleanup 'Restore the old primary' changes production" \
        in capsys.readouterr().out

    ran.clear()
    drill = drillbook.start(env="prod", dry_run=False, change="CHG-7")
    drill.cleanup(lambda: ran.append("restore"), "Restore the old primary")
    drill.finish()
    assert ran == ["restore"]


# --------------------------------------------------------------------------- hostile text on the site
HOSTILE_TITLE = 'Hostile </title><script>window.pwned="title"</script> & {: onclick="window.pwned=1" }'


class _Elements(HTMLParser):
    """Every element's attributes, the text of every <script> and of <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.titles: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "title") else None

    def handle_data(self, data: str) -> None:
        if self._open == "script":
            self.scripts.append(data)
        elif self._open == "title":
            self.titles.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _parse(path: Path) -> _Elements:
    parser = _Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@dataclass
class HostileSite:
    root: Path
    run_id: str

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def notebook_html(self) -> set[Path]:
        """The run-time HTML (as the evidence page frames it, and as published on its own)."""
        return {self.site / "evidence" / "runs" / self.run_id / "notebook.html",
                self.site / "evidence" / "html" / f"{self.run_id}.html"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileSite:
    """hostile.ipynb run by the real runner, then published: a title that closes <title>; Markdown
    attribute lists ({: onclick=…}) in its title, owner, step and check names and prose; raw HTML
    and javascript: links in its prose; a code cell that closes its fence; an output and
    attachments (HTML, SVG) that run scripts."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    root = _project(tmp_path, "hostile.ipynb")
    env = {"DRILLBOOK_HOME": str(tmp_path / "home")}
    run = cli(root, "run", "hostile", "--env", "local", env=env)
    assert run.code == 0, run.output
    published = cli(root, "publish", "--full-runs", "3", env=env)
    assert published.code == 0, published.output
    return HostileSite(root, next((root / "reports" / "evidence" / "runs").glob("*-hostile-*")).name)


def test_hostile_notebook_text_stays_inert_on_every_page(hostile: HostileSite) -> None:
    site, run_id = hostile.site, hostile.run_id
    titles = {"runbooks/hostile/index.html": HOSTILE_TITLE, "status/history/hostile/index.html": f"History: {HOSTILE_TITLE}",
              f"evidence/runs/{run_id}/index.html": f"{HOSTILE_TITLE} on local"}
    for page, title in titles.items():
        parsed = _parse(site / page)
        assert parsed.titles == [f"{title} - drillbook"], page  # the whole title, as text, inside <title>
    pages = [p for p in site.rglob("*.html") if p not in hostile.notebook_html]
    assert len(pages) > 10
    for page in pages:
        parsed = _parse(page)
        assert not [s for s in parsed.scripts if "pwned" in s], page
        handlers = [(tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on")]
        assert not handlers, (page, handlers)
        links = [a["href"] for tag, a in parsed.tags if tag == "a" and (a.get("href") or "").lower().startswith("javascript")]
        assert not links, (page, links)

    evidence = _parse(site / "evidence" / "runs" / run_id / "index.html")
    frames = [attrs for tag, attrs in evidence.tags if tag == "iframe"]
    assert len(frames) == 1 and frames[0]["src"] == "notebook.html"
    assert frames[0].get("sandbox") == "", frames  # no allow-scripts, no allow-same-origin
    attachments = site / "evidence" / "runs" / run_id / "attachments"
    assert sorted(p.name for p in attachments.iterdir()) == ["chart.svg.txt", "report.html.txt"]  # text, not pages
    assert "window.pwned" in (attachments / "report.html.txt").read_text()
    for path in hostile.notebook_html:  # the output's script is kept as evidence, and cannot run
        parsed = _parse(path)
        assert any("pwned" in s for s in parsed.scripts), path
        policy = [a for tag, a in parsed.tags if tag == "meta" and (a.get("http-equiv") or "").lower()
                  == "content-security-policy"]
        assert policy and "script-src 'none'" in (policy[0]["content"] or ""), path


def test_no_script_from_the_hostile_notebook_runs_in_chromium(hostile: HostileSite, tmp_path: Path) -> None:
    """Every page that shows the hostile notebook, loaded over HTTP: ``window.pwned`` stays unset in
    the page and in the framed notebook, and the published notebook opened on its own runs nothing."""
    require_browser()
    from playwright.sync_api import sync_playwright

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(hostile.site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = ["runbooks/hostile/", "status/history/hostile/", "status/", "status/compliance/",
             f"evidence/runs/{hostile.run_id}/", f"evidence/html/{hostile.run_id}.html",
             f"evidence/runs/{hostile.run_id}/notebook.html", f"evidence/runs/{hostile.run_id}/attachments/report.html.txt"]
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = context.new_page()
                for path in pages:
                    page.goto(base + path, wait_until="load")
                    if page.locator("iframe.db-notebook").count():  # lazy: scroll to it, wait for its content
                        page.locator("iframe.db-notebook").scroll_into_view_if_needed()
                        framed = page.frame_locator("iframe.db-notebook")
                        framed.locator("header.run").wait_for(timeout=10_000)
                        assert "script above" in framed.locator("main").inner_text()  # the output is there
                    assert len(page.frames) == (2 if path.startswith("evidence/runs/") and path.endswith("/") else 1)
                    for frame in page.frames:
                        assert frame.evaluate("typeof window.pwned") == "undefined", (path, frame.url)
            finally:
                context.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
