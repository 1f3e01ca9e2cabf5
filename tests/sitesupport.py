"""Helpers shared by the tests that publish a site: the benchmark's archive writer and a real browser.

``site_build`` is bench/site_build.py loaded as a module (it makes projects and writes signed runs);
``CHROMIUM``, ``CHROMIUM_FLAGS``, ``require_browser`` and ``QuietHandler`` drive Debian's chromium
against a site served on localhost. Under CI=true a missing browser is a failure, never a skip.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import REPO


def _load_bench() -> ModuleType:
    """bench/site_build.py: the synthetic-archive writer the benchmark uses, shared with these tests."""
    if "site_build" in sys.modules:
        return sys.modules["site_build"]
    spec = importlib.util.spec_from_file_location("site_build", REPO / "bench" / "site_build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["site_build"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


site_build = _load_bench()

# Debian's chromium, never a downloaded browser. The network is closed to the browser's own services.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    if Path(CHROMIUM).is_file():
        return
    message = "Debian chromium is not installed (make system-deps installs it as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; under CI the browser test must run")
    pytest.skip(message)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep pytest's output for failures
        pass
