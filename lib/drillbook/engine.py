"""A papermill engine that reports cell progress to the runner.

Everything else is papermill's own nbclient engine: the output notebook is saved after each
cell and failed runs are still written out. The only addition is an ``on_cell`` callback.
"""
from __future__ import annotations

from typing import Any, Callable

from papermill.engines import NBClientEngine, papermill_engines

ENGINE_NAME = "drillbook"
CellCallback = Callable[[str, int, int, Any], None]  # (event, index, total, cell)


class DrillbookEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, on_cell: CellCallback | None = None,
                                 **kwargs: Any) -> Any:
        if on_cell is not None:
            total = len(nb_man.nb.cells)
            start, complete = nb_man.cell_start, nb_man.cell_complete

            def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> None:
                start(cell, cell_index, **kw)
                on_cell("start", cell_index or 0, total, cell)

            def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> None:
                complete(cell, cell_index, **kw)
                on_cell("complete", cell_index or 0, total, cell)

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register(ENGINE_NAME, DrillbookEngine)
