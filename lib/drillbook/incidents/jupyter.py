"""The Jupyter server extension drillbook ships: it registers the pre-save hook (``presave``).

``pip install`` puts ``jupyter-config/drillbook.json`` into the environment's
``etc/jupyter/jupyter_server_config.d/``, which enables this extension for every ``jupyter lab``
started from that environment, wherever it is started; the hook itself acts only on the source
notebooks of a drillbook project. Nothing for the operator to configure or forget.
"""
from __future__ import annotations

from typing import Protocol

from .presave import ContentsManager, scrub_source_notebook


class HookedContentsManager(ContentsManager, Protocol):
    def register_pre_save_hook(self, hook: object) -> None: ...


class ServerApp(Protocol):
    contents_manager: HookedContentsManager


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "drillbook.incidents.jupyter"}]


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    serverapp.contents_manager.register_pre_save_hook(scrub_source_notebook)
