"""A papermill engine that tells the runner about its kernel and its progress.

Everything else is papermill's own nbclient engine: the output notebook is saved after each
cell and failed runs are still written out. Three additions:

* ``on_client(client)`` right after the notebook client is built, so the runner can find the
  kernel's pid (to interrupt it at a timeout, or stop it after a crash);
* ``on_cell(event, index, total, cell)`` with event start, complete or failed, for progress;
* ``kernel_output``: a binary file that becomes the kernel process's stdout and stderr. What a
  kernel writes below ``sys.stdout`` (``os.system``, subprocesses, ``os.write(1, …)``, a logging
  handler on ``sys.__stderr__``) never reaches the notebook, so it is never scrubbed: it must not
  reach the runner's terminal either.
"""
from __future__ import annotations

import sys
from typing import IO, Any, Callable

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.utils import remove_args

ENGINE_NAME = "drillbook"
CellCallback = Callable[[str, int, int, Any], None]
ClientCallback = Callable[[Any], None]


def _wrap_progress(nb_man: Any, on_cell: CellCallback) -> None:
    total = len(nb_man.nb.cells)
    start, complete = nb_man.cell_start, nb_man.cell_complete

    def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> None:
        start(cell, cell_index, **kw)
        on_cell("start", cell_index or 0, total, cell)

    def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> None:
        complete(cell, cell_index, **kw)
        # papermill calls this in a `finally`: an exception in flight (dead kernel) means failure.
        failed = sys.exc_info()[0] is not None or cell.metadata.get("papermill", {}).get("exception")
        on_cell("failed" if failed else "complete", cell_index or 0, total, cell)

    nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete


class DrillbookEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                 stdout_file: Any = None, stderr_file: Any = None, start_timeout: int = 60,
                                 execution_timeout: float | None = None, on_cell: CellCallback | None = None,
                                 on_client: ClientCallback | None = None, kernel_output: IO[bytes] | None = None,
                                 **kwargs: Any) -> Any:
        if on_cell is not None:
            _wrap_progress(nb_man, on_cell)
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        # Same construction as papermill's NBClientEngine, keeping a handle on the client.
        client = PapermillNotebookClient(
            nb_man, timeout=execution_timeout, startup_timeout=start_timeout, kernel_name=kernel_name,
            log=logger, log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file, **kwargs,
        )
        if on_client is not None:
            on_client(client)
        # execute() hands these to KernelManager.start_kernel, which hands them to Popen.
        launch = {} if kernel_output is None else {"stdout": kernel_output, "stderr": kernel_output}
        return client.execute(**launch)


papermill_engines.register(ENGINE_NAME, DrillbookEngine)
