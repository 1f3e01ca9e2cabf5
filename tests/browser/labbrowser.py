"""A real JupyterLab on loopback, driven by Debian's chromium through playwright.

``JupyterLab.start`` runs ``.venv/bin/jupyter lab`` on a free port with a random token, rooted at
a project, with its own config, runtime, settings and workspace folders (nothing of the user's
is read or written) and the environment the test gives its kernels (``DRILLBOOK_OPERATOR``, the
archive, the key home). ``Lab`` is one browser page on it: open a notebook, use the menus, type in
cells and widgets, and wait, with a bounded poll, for what the page or the kernel says.

Screenshots go to the test's folder; with ``DRILLBOOK_SCREENSHOTS_DIR`` set, the ones named for
the documentation are copied there too (CI leaves it unset, so it never rewrites the docs).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labsupport import free_ports

if TYPE_CHECKING:  # playwright is imported by the tests that drive a browser
    from playwright.sync_api import Locator, Page

JUPYTER = Path(sys.executable).parent / "jupyter"
FINISH = "drill.finish()"  # the last cell of every runbook; prose in other cells may name it too
EXTENSION_CONFIG = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "drillbook.json"
SETTINGS = {  # quiet and quick: no news, no update checks; autosave often, so the tests meet it
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosaveInterval": 2},
}


def wait_until(what: str, probe: Callable[[], object], timeout: float = 120.0, every: float = 0.25) -> object:
    """Poll ``probe`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class JupyterLab:
    root: Path
    folder: Path
    env: dict[str, str]
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log(self) -> Path:
        return self.folder / "jupyterlab.log"

    def start(self) -> JupyterLab:
        if not EXTENSION_CONFIG.is_file():
            raise AssertionError(f"{EXTENSION_CONFIG} is missing: run `make venv` (it enables the pre-save hook)")
        for name in ("config", "runtime", "settings", "workspaces", "data"):
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        for name, values in SETTINGS.items():
            target = self.folder / "settings" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        (self.port,) = free_ports(1)
        self.env = {**os.environ, **self.env, "JUPYTER_CONFIG_DIR": str(self.folder / "config"),
                    "JUPYTER_RUNTIME_DIR": str(self.folder / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(self.folder / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.folder / "workspaces")}
        command = [str(JUPYTER), "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
                   f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
                   "--LabApp.news_url=", "--ServerApp.open_browser=False"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until("JupyterLab to answer /api/status", self._ready, timeout=90)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"JupyterLab exited ({self.process.returncode}):\n{self.log_tail()}")
        try:
            return self.api("GET", "api/status") is not None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def api(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def kernels(self) -> list[dict[str, object]]:
        found = self.api("GET", "api/kernels")
        assert isinstance(found, list)
        return found

    def stop(self) -> None:
        """Shut the server down (it stops its kernels), then make sure its process group is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Shots:
    """Numbered screenshots under the test's folder; docs copies when DRILLBOOK_SCREENSHOTS_DIR is set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        docs = os.environ.get("DRILLBOOK_SCREENSHOTS_DIR")
        self.docs = Path(docs) if docs else None

    def take(self, page: Page, name: str, docs_name: str | None = None, show: Locator | None = None) -> Path:
        """A screenshot of the page, with ``show`` (a cell) scrolled to the top of the notebook."""
        if show is not None:
            show.evaluate("node => node.scrollIntoView({block: 'start'})")
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path))
        if self.docs is not None and docs_name:
            self.docs.mkdir(parents=True, exist_ok=True)
            self._for_docs(path, self.docs / f"{docs_name}.png")
        return path

    @staticmethod
    def _for_docs(shot: Path, target: Path) -> None:
        """A small copy for the documentation: the notebook's area only, in a 64-colour palette."""
        from PIL import Image  # matplotlib's dependency; only when docs screenshots are asked for

        with Image.open(shot) as image:
            width, height = image.size
            cropped = image.convert("RGB").crop((290, 0, min(width, 1245), height))  # no file browser
            cropped.quantize(colors=64).save(target, optimize=True)


@dataclass
class Lab:
    """One JupyterLab page: what an operator does, and the truths a test waits for."""

    page: Page
    server: JupyterLab
    shots: Shots

    def open(self, relative: str) -> None:
        # ?reset: a clean workspace, not the tabs an earlier test left open (the server keeps them)
        self.page.goto(f"{self.server.url}lab/tree/{relative}?reset&token={self.server.token}")
        self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(timeout=90_000)
        wait_until("the kernel to be idle", lambda: self.kernel_status() == "idle", timeout=90)

    def kernel_status(self) -> str | None:
        return self.page.evaluate("""() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return k ? k.status : null; }""")

    def kernel_id(self) -> str:
        return self.page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")

    def cells(self) -> Locator:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    def code_cell(self, contains: str) -> Locator:
        """The one code cell whose source contains ``contains`` (or, for ``drill.finish()``, is it)."""
        text: str | re.Pattern[str] = re.compile(rf"^\s*{re.escape(contains)}\s*$") if contains == FINISH else contains
        cell = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea .cm-content", has_text=text))
        wait_until(f"one code cell containing {contains!r}", lambda: cell.count() == 1, timeout=30)
        return cell

    def output(self, contains: str) -> str:
        return self.code_cell(contains).locator(".jp-OutputArea").inner_text()

    def menu(self, top: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text=item).first.click()

    def run_all(self) -> None:
        self.menu("Run", "Run All Cells")

    def busy(self) -> bool:
        prompts = self.cells().locator(".jp-InputPrompt").all_inner_texts()
        return any("*" in p for p in prompts) or self.kernel_status() != "idle"

    def wait_for_output(self, cell: str, text: str, timeout: float = 240) -> str:
        """Wait until the cell containing ``cell`` shows ``text`` and the kernel is idle again."""
        wait_until(f"{text!r} under the cell {cell!r}", lambda: text in self.output(cell), timeout=timeout)
        wait_until("the kernel to finish", lambda: not self.busy(), timeout=timeout)
        return self.output(cell)

    def set_source(self, contains: str, source: str) -> None:
        """Replace a cell's source by typing, as an operator would (select all, then type)."""
        editor = self.code_cell(contains).locator(".cm-content")
        editor.click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.insert_text(source)
        self.page.keyboard.press("Escape")

    def select_cell(self, contains: str) -> None:
        self.code_cell(contains).locator(".jp-InputPrompt").click()

    def save(self) -> None:
        self.page.keyboard.press("Control+s")
        wait_until("the notebook to be saved", lambda: not self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.context.model.dirty"), timeout=30)
