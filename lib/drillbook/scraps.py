"""The one place that knows how results are glued into a notebook (scrapbook today).

Drills glue their results so that anyone with scrapbook can read them back from the executed
notebook; the runner reads them without importing scrapbook (it is slow to import and
unmaintained), by the documented output mimetype. Replace this module to change the mechanism.
"""
from __future__ import annotations

from typing import Any

RESULTS_SCRAP = "drillbook_results"
SCRAP_MIMETYPE = "application/scrapbook.scrap.json+json"


def glue_results(results: dict[str, Any]) -> None:
    """Glue ``results`` (JSON-serialisable) into the running notebook."""
    import scrapbook

    scrapbook.glue(RESULTS_SCRAP, results, encoder="json")


def read_scraps(nb: dict[str, Any]) -> dict[str, Any]:
    """Every JSON scrap in an executed notebook, by name (last one wins)."""
    scraps: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            payload = output.get("data", {}).get(SCRAP_MIMETYPE)
            if isinstance(payload, dict) and "name" in payload:
                scraps[payload["name"]] = payload.get("data")
    return scraps
