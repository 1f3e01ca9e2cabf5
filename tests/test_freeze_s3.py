"""The kill switch on an archive on object storage (a real S3 server on loopback, ``s3support``):
freeze, thaw and status work there; runs, ``run --due`` and the Airflow task path refuse or skip
with a recorded ``frozen`` entry; a freeze made from one worker interrupts a drill running on
another; and a freeze object written by anyone else is read fail-safe, as a folder's is."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from conftest import DRILLBOOK, Project, cli
from drillbook.evidence import freeze, remote
from drillbook.evidence.store import S3Archive, S3Store, parse_s3
from drillbook.site import status as site_status
from s3support import s3_archive, s3_server  # noqa: F401  (fixtures)

WAIT = 240.0


def _objects(url: str, under: str) -> list[str]:
    archive = parse_s3(url)
    return sorted(archive.relative(k) for k in S3Store(archive).list(under))


def _put(url: str, name: str, body: bytes) -> None:
    """An object written behind drillbook's back (another tool, another key, an attacker)."""
    archive = parse_s3(url)
    boto3.client("s3").put_object(Bucket=archive.bucket, Key=archive.key(name), Body=body)


def test_freeze_on_an_s3_archive_refuses_and_skips_runs_until_thawed(project: Project, tmp_path: Path,
                                                                    s3_archive: str) -> None:
    project.add_notebook("passes.ipynb")
    (project.root / "parameters" / "schedule.yaml").write_text("runs:\n  - {drill: passes, env: local, cron: '@daily'}\n")
    env = {"DRILLBOOK_ARCHIVE": s3_archive}
    made = cli(project, "freeze", "--env", "local", "--reason", "INC-9 storage outage", env=env)
    assert made.code == 0 and "FROZEN: environment 'local' is frozen by" in made.stdout, made.output
    assert _objects(s3_archive, "freeze/") == ["freeze/local.json"] and not project.archive.exists()

    refused = cli(project, "run", "passes", "--env", "local", env=env)
    assert refused.code == 3 and "not started: environment 'local' is frozen" in refused.stderr, refused.output
    due = cli(project, "run", "--due", env=env)
    assert due.code == 0 and "skipped passes@local: environment 'local' is frozen" in due.stderr, due.output
    by_airflow = cli(project, "run", "passes", "--env", "local", "--scheduler", "airflow", env=env)
    assert by_airflow.code == 3 and "SKIPPED passes on local" in by_airflow.stdout, by_airflow.output
    skips = freeze.skipped(parse_s3(s3_archive))
    assert [(s["status"], s["scheduler"]) for s in skips] == [("frozen", "run --due"), ("frozen", "airflow")]
    assert skips[0]["freeze"]["reason"] == "INC-9 storage outage"  # type: ignore[index]

    status = cli(project, "status", env=env)
    assert "FROZEN environment 'local' is frozen by" in status.stdout and "2 scheduled run(s) skipped" in status.stdout, \
        status.output
    assert "(frozen)" in cli(project, "schedule", env=env).stdout
    copy = tmp_path / "mirror"  # what publish builds the dashboard from: its banner shows the freeze
    remote.mirror(parse_s3(s3_archive), copy)
    assert any('"Frozen: local"' in banner and "INC-9 storage outage" in banner
               for banner in site_status.freeze_banners(copy))
    thawed = cli(project, "thaw", "--env", "local", env=env)
    assert thawed.code == 0 and "thawed: local" in thawed.stdout and _objects(s3_archive, "freeze/local") == []
    ran = cli(project, "run", "passes", "--env", "local", env=env)
    assert ran.code == 0 and "PASSED" in ran.stdout, ran.output
    verified = cli(project, "verify", env=env)  # the freeze/ objects are the archive's own, not strays
    assert verified.code == 0 and "not part of a drillbook archive" not in verified.output, verified.output


def _worker(project: Project, tmp: Path, name: str, url: str) -> dict[str, str]:
    """A copy of the project with a state folder and a signing key of its own (another machine)."""
    root = tmp / name
    subprocess.run(["cp", "-a", str(project.root), str(root)], check=True)
    return {"DRILLBOOK_PROJECT": str(root), "DRILLBOOK_ARCHIVE": url, "DRILLBOOK_STATE": str(root / ".drillbook"),
            "DRILLBOOK_HOME": str(tmp / f"{name}-home"), "COLUMNS": "200"}


def test_a_freeze_from_one_worker_interrupts_a_drill_on_another(project: Project, tmp_path: Path,
                                                                 s3_archive: str) -> None:
    project.add_notebook("slow.ipynb")
    one, two = _worker(project, tmp_path, "one", s3_archive), _worker(project, tmp_path, "two", s3_archive)
    marker = tmp_path / "marker"
    running = subprocess.Popen([str(DRILLBOOK), "run", "slow", "--env", "local", "-p", f"marker_path={marker}",
                                "-p", "seconds=300"], cwd=two["DRILLBOOK_PROJECT"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **two})
    deadline = time.monotonic() + WAIT
    while not Path(f"{marker}.started").exists():
        assert running.poll() is None and time.monotonic() < deadline, running.communicate()
        time.sleep(0.1)
    frozen = cli(Path(one["DRILLBOOK_PROJECT"]), "freeze", "--all", "--reason", "INC-10 site down", env=one)
    assert frozen.code == 0, frozen.output
    output = running.communicate(timeout=WAIT)[0]  # the freeze, not the 300 s step, ends it
    assert running.returncode == 1 and "ABORTED" in output, output
    assert marker.read_text() == "cleaned"  # the drill's cleanup ran on its own worker
    run_id = next(line.split()[-1] for line in output.splitlines() if line.startswith("run: "))
    archive = parse_s3(s3_archive)
    got = S3Store(archive).get(archive.key("runs", run_id, "record.json"))
    assert got is not None, f"run {run_id} has no record on the bucket"
    record = json.loads(got[0])
    assert record["status"] == "aborted" and "interrupted because all environments are frozen by" in record["reason"]
    assert "INC-10 site down" in record["reason"]


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_freeze_objects_not_written_by_drillbook_are_read_fail_safe(kind: str, project: Project,
                                                                   request: pytest.FixtureRequest) -> None:
    if kind == "s3":
        url = request.getfixturevalue("s3_archive")
        archive: Path | S3Archive = parse_s3(url)

        def put(name: str, body: bytes) -> None:
            _put(url, f"freeze/{name}", body)
    else:
        archive = project.archive

        def put(name: str, body: bytes) -> None:
            (project.archive / "freeze" / name).parent.mkdir(parents=True, exist_ok=True)
            (project.archive / "freeze" / name).write_bytes(body)
    real = json.dumps({"reason": "x", "by": "y", "at": "z"}).encode()
    for name in ("Prod.json", "ALL.json.tmp", ".ALL.json", "../local.json", "x y.json"):
        if kind == "s3" or "/" not in name:
            put(name, real)  # names that are no scope's: no freeze
    if kind == "s3":
        put("local.json/nested", real)  # a "folder" on object storage is only a name
    assert freeze.active(archive) == [] and freeze.frozen("local", archive) is None

    put("local.json", b"\xff\xfe not utf-8 \x00")  # unreadable: still frozen
    put("staging.json", json.dumps({"reason": "\x1b[2J\x1b]0;owned\x07 clear", "by": "m\nallory", "at": 5}).encode())
    found = {f.scope: f for f in freeze.active(archive)}
    assert "cannot be read" in found["local"].reason and freeze.frozen("local", archive) is not None
    assert found["staging"].reason == "[2J ]0;owned clear" and found["staging"].by == "m allory"
    assert not any(ord(c) < 32 for f in found.values() for c in f.describe())

    put("skipped/a.json", b"[]")  # not an object: left out, never a crash of `status`
    put("skipped/b.json", json.dumps({"drill": "d\x1b[31m", "env": "local", "at": "t"}).encode())
    assert freeze.skipped(archive) == [{"drill": "d [31m", "env": "local", "at": "t"}]


pytestmark = pytest.mark.integration
