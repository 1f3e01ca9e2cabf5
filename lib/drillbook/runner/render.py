"""Rendering an executed notebook to HTML, once, at run time.

nbconvert's ``basic`` template wrapped in a small self-contained page (about 10 KB of CSS)
instead of the ``lab`` template (about 280 KB of CSS per run): evidence pages stay readable
standalone, and a 10,000-run archive stays small enough to verify in seconds.
The exporter is built in a background thread while the kernel starts, so its one-off cost
(template compilation) overlaps the run instead of adding to it. Its imports happen first, in
the caller's thread: two threads importing overlapping packages at once can each hold a module
half-initialised that the other needs, and Python then hands one of them the partial module
(``ImportError: cannot import name … from partially initialized module …``).
"""
from __future__ import annotations

import html
import threading
import warnings
from typing import Any

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1f2328}
header.run{border:1px solid #d0d7de;border-radius:6px;padding:.6em 1em;margin-bottom:1.5em;background:#f6f8fa}
header.run .status{font-weight:bold;text-transform:uppercase}
.status-passed{color:#1a7f37}.status-failed,.status-error{color:#cf222e}.status-aborted{color:#9a6700}
.cell{margin:.4em 0;display:block}
.input{display:flex}.prompt{min-width:6em;color:#6e7781;font-family:monospace;font-size:.85em;padding-top:.4em}
.inner_cell{flex:1;min-width:0}.input_area{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px}
.input_area pre{margin:0;padding:.5em;overflow-x:auto}
.output_area{display:flex}.output_subarea{flex:1;min-width:0;overflow-x:auto;padding:.2em .5em}
.output_subarea pre{margin:0;white-space:pre-wrap}
.output_stderr{background:#fff8c5}.output_error{background:#ffebe9}
.text_cell_render{padding:.2em .5em}
.celltag_papermill-error-cell-tag .input_area,.celltag_drillbook-failed-cell .input_area{border:2px solid #cf222e}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.2em .5em}
.ansi-red-fg{color:#cf222e}.ansi-green-fg{color:#1a7f37}.ansi-yellow-fg{color:#9a6700}
.ansi-blue-fg{color:#0969da}.ansi-cyan-fg{color:#1b7c83}.ansi-magenta-fg{color:#8250df}.ansi-bold{font-weight:bold}
"""

# The page is evidence, read as a static document: outputs may hold scripts (plots, widgets or
# something hostile), and none may run, wherever the page is opened (the site embeds it in a
# sandboxed frame, but it is also published on its own). Styles are inline, images data: URIs.
CONTENT_POLICY = "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


def import_exporter() -> None:
    """Import everything the warm-up needs, in the calling thread (see the module docstring)."""
    import nbformat  # noqa: F401

    # nbconvert's highlight filter imports IPython's lexers at its first use, which imports all of
    # IPython: the papermill worker imports parts of it too (IPython.paths, to find the kernel).
    from IPython.lib import lexers  # noqa: F401
    from nbconvert import HTMLExporter  # noqa: F401
    from pygments.formatters import HtmlFormatter  # noqa: F401


class HtmlRenderer:
    """Builds the exporter in the background; ``render`` waits for it only if it is not ready yet.

    Never raises on construction: a failure to import or to warm up is kept, returned by
    ``wait`` and raised by ``render``, so the caller can record it as evidence.
    """

    def __init__(self) -> None:
        self._exporter: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        try:
            import_exporter()
        except Exception as exc:  # a broken installation: reported like a failed warm-up
            self._error = exc
            return
        self._thread = threading.Thread(target=self._warm, name="drillbook-html-warmup", daemon=True)
        self._thread.start()

    def _warm(self) -> None:
        try:
            import nbformat
            from nbconvert import HTMLExporter
            from pygments.formatters import HtmlFormatter

            exporter = HTMLExporter(template_name="basic")
            warm = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
            exporter.from_notebook_node(warm)
            self._css = PAGE_CSS + HtmlFormatter(style="default").get_style_defs(".highlight")
            self._exporter = exporter
        except BaseException as exc:  # reported when render() is called
            self._error = exc

    def wait(self) -> BaseException | None:
        """Wait for the warm-up; return why the exporter could not be built, if it could not."""
        if self._thread is not None:
            self._thread.join()
        return self._error

    def render(self, nb: Any, header: dict[str, Any]) -> str:
        error = self.wait()
        if error is not None:
            raise error
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. scrapbook's mimetype has no HTML representation
            body, _ = self._exporter.from_notebook_node(nb)
        return _page(body, header, self._css)


def _page(body: str, header: dict[str, Any], css: str) -> str:
    status = str(header.get("status", ""))
    rows = "".join(
        f"<div><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</div>"
        for k, v in header.items() if k not in ("status", "title") and v not in (None, "")
    )
    title = html.escape(str(header.get("title", "drillbook run")))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_POLICY}\">"
        f"<title>{title}</title><style>{css}</style></head><body>\n"
        f"<header class=\"run\"><h1>{title}</h1>"
        f"<div>status: <span class=\"status status-{html.escape(status)}\">{html.escape(status)}</span></div>"
        f"{rows}</header>\n<main>\n{body}\n</main></body></html>\n"
    )
