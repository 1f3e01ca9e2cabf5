"""The one place that knows how results are glued into a notebook: scrapbook's scrap format.

Drills glue their results so that anyone with scrapbook can read them back from the executed
notebook (``scrapbook.read_notebook(path).scraps``). The kernel writes the scrap itself, in
scrapbook's documented output format (its JSON encoder's mimetype, payload and metadata), rather
than calling ``scrapbook.glue``: importing scrapbook imports papermill with it, 0.5 to 1.2 s of CPU
in every kernel of every run and child run, for one display message. The runner reads scraps by
the same mimetype, without importing scrapbook either. tests/runner/test_runner.py reads a run's
results back with scrapbook itself, so a change of format fails there. Replace this module to
change the mechanism.
"""
from __future__ import annotations

from typing import Any

RESULTS_SCRAP = "drillbook_results"
SCRAP_MIMETYPE = "application/scrapbook.scrap.json+json"
SCRAP_VERSION = 1  # scrapbook's LATEST_SCRAP_VERSION, the schema its reader validates against


def glue_results(results: dict[str, Any]) -> None:
    """Glue ``results`` (JSON-serialisable) into the running notebook, as ``scrapbook.glue(RESULTS_SCRAP,
    results, encoder="json")`` does: one raw display output that notebook frontends do not show."""
    from IPython.display import display  # loaded in the kernel already

    payload = {"name": RESULTS_SCRAP, "data": results, "encoder": "json", "version": SCRAP_VERSION}
    display({SCRAP_MIMETYPE: payload}, metadata={"scrapbook": {"name": RESULTS_SCRAP, "data": True, "display": False}},
            raw=True)


def read_scraps(nb: dict[str, Any]) -> dict[str, Any]:
    """Every JSON scrap in an executed notebook, by name (last one wins)."""
    scraps: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            payload = output.get("data", {}).get(SCRAP_MIMETYPE)
            if isinstance(payload, dict) and "name" in payload:
                scraps[payload["name"]] = payload.get("data")
    return scraps
