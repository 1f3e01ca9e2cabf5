"""files.py: the one atomic write, flock and kill, and the writers that use it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from drillbook import files
from drillbook.lab.state import LabPaths, LabPorts, LabState, load_state, save_state
from drillbook.site.data import Cache


def _plant(target: Path, victim: Path) -> None:
    """A symbolic link where a writer using a fixed temporary name would write."""
    victim.write_text("not yours\n")
    target.with_suffix(".tmp").symlink_to(victim)


def test_write_atomic_replaces_whole_file_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.json"
    files.write_json_atomic(path, {"a": 1})
    files.write_atomic(path, "new\n", mode=0o640)
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["data.json"]  # no temporary left behind


def test_site_cache_never_writes_through_a_planted_temporary(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "site-cache.json")
    _plant(cache.path, tmp_path / "victim")
    cache.section("summaries")["r1"] = {"status": "passed"}
    cache.save()
    assert (tmp_path / "victim").read_text() == "not yours\n"
    assert Cache(cache.path).section("summaries") == {"r1": {"status": "passed"}}


def test_lab_state_never_writes_through_a_planted_temporary(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path)
    paths.state.parent.mkdir(parents=True, exist_ok=True)
    _plant(paths.state, tmp_path / "victim")
    state = LabState(ports=LabPorts.from_env({}), os_user="drill")
    save_state(paths, state)
    assert (tmp_path / "victim").read_text() == "not yours\n"
    assert load_state(paths) == state


def test_flocked_excludes_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with files.flocked(lock):
        with open(lock, "a+") as other:
            assert not files.try_flock(other)
    with open(lock, "a+") as other:
        assert files.try_flock(other)
        files.unflock(other)


def test_kill_reports_a_gone_process(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert files.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert not files.kill(child.pid, signal.SIGKILL)  # reaped: no such process
    assert files.kill(os.getpid(), 0)  # signal 0: our own process is there
