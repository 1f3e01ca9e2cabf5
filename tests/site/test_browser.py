"""The built site in a real browser: headless Debian chromium driven by playwright.

Dashboard → a drill's history → one evidence page, served over HTTP on localhost. Asserts no console
errors, no failed requests, that the chart images loaded (naturalWidth > 0) and that the run-time
notebook shows inside the evidence page. Screenshots go to the test's tmp_path (printed at the end).
Under CI=true a missing browser is a failure, never a skip.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import cli
from sitesupport import CHROMIUM, CHROMIUM_FLAGS, QuietHandler, require_browser
from test_site import build_fixture

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fixture archive (synthetic runs only: the browser needs pages, not kernels), published and served."""
    fixture = build_fixture(tmp_path_factory.mktemp("browser-site"), real_runs=False)
    result = cli(fixture.root, "publish", "--full-runs", "3", env={"DRILLBOOK_HOME": str(fixture.home)})
    assert result.code == 0, result.output
    handler = functools.partial(QuietHandler, directory=str(fixture.root / "site"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(timeout=5)


def _images_loaded(page: Any) -> list[dict[str, Any]]:
    """Every content image, scrolled into view first so lazy loading cannot fake a pass."""
    images = page.locator("article img")
    found = []
    for index in range(images.count()):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete", arg=image.element_handle())
        found.append(image.evaluate("img => ({src: img.getAttribute('src'), width: img.naturalWidth})"))
    return found


def test_dashboard_to_history_to_evidence_in_chromium(served_site: str, tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))

            page.goto(served_site + "status/", wait_until="networkidle")
            assert page.locator("h1").first.inner_text().startswith("Dashboard")
            assert page.locator("article table .db-flag.db-overdue").count() >= 1  # overdue drills stand out
            page.screenshot(path=str(tmp_path / "1-dashboard.png"), full_page=True)

            page.locator("article table a", has_text="Failover under load (simulated)").first.click()
            page.wait_for_load_state("networkidle")
            assert page.url.endswith("/status/history/failover_sim/")
            charts = _images_loaded(page)
            assert {Path(c["src"]).name for c in charts} == {"failover_sim-measures.png", "failover_sim-outcomes.png"}
            assert all(c["width"] > 0 for c in charts), charts
            page.evaluate("window.scrollTo(0, 0)")  # a clean full-page shot: header at the top
            page.screenshot(path=str(tmp_path / "2-history.png"), full_page=True)

            page.locator("article table a", has_text="record").first.click()
            page.wait_for_load_state("networkidle")
            assert "/evidence/runs/" in page.url
            assert page.get_by_text("verify passes for this run").is_visible()
            frame = page.locator("iframe.db-notebook")
            frame.scroll_into_view_if_needed()
            header = page.frame_locator("iframe.db-notebook").locator("header.run")
            header.wait_for(timeout=10_000)
            assert "Failover under load (simulated)" in header.inner_text()  # the run-time HTML, in place
            page.wait_for_load_state("networkidle")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(tmp_path / "3-evidence.png"), full_page=True)
        finally:
            context.close()
    assert not problems, problems
    for name in ("1-dashboard.png", "2-history.png", "3-evidence.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    print(f"screenshots: {tmp_path}")
