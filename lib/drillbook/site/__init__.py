"""The published site: Markdown pages generated from the catalog and the archive, built by MkDocs.

``publish`` generates the pages and builds the site; ``serve`` generates them and runs a live preview.
The modules of the package are described in ``build``.
"""
from .build import Published, SiteBuildFailed, publish, serve

__all__ = ["Published", "SiteBuildFailed", "publish", "serve"]
