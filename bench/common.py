"""Shared set-up for benchmarks: a throwaway project with its own archive, state and key."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "notebooks"


def scratch_project(name: str) -> Path:
    """A minimal project under a temporary folder; drillbook's paths all point into it."""
    root = Path(tempfile.mkdtemp(prefix=f"drillbook-bench-{name}-")) / "project"
    (root / "parameters" / "environments").mkdir(parents=True)
    (root / "parameters" / "environments" / "local.yaml").write_text("hosts:\n  here:\n    shell: local\n")
    (root / "notebooks" / "drills").mkdir(parents=True)
    os.environ.update(DRILLBOOK_PROJECT=str(root), DRILLBOOK_HOME=str(root.parent / "home"))
    return root


def add_fixture(root: Path, fixture: str, folder: str = "bench") -> Path:
    target = root / folder / fixture
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / fixture, target)
    return target


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):.3f} s  (min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"
