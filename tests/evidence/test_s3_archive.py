"""The archive on object storage, against a real S3 server on loopback (moto, see ``s3support``).

* the server enforces the conditional writes the ledger relies on (``If-None-Match: *``, ``If-Match``);
* many writers appending at once: the chain never forks and no entry is lost;
* two project copies ("two workers", each with its own state and signing key) run drills at the
  same time into one bucket: verify passes, both runs are in the chain, status and publish show both;
* a runner killed half-way through uploading leaves nothing verify accepts as a run, and the next
  command uploads the same bundle again and enters it with its true status;
* verify names the object behind a problem.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from conftest import DRILLBOOK, REPO, Project, cli
from drillbook.evidence import trust, keys, remote, s3ledger
from drillbook.evidence.store import S3Store, parse_s3
from s3support import s3_archive, s3_server  # noqa: F401  (fixtures)
from sitesupport import site_build

WRITERS = 6
APPENDS_EACH = 4
CUT_FILES = 150  # attachments: enough objects that the upload is still under way when it is cut
POLL = 0.02
WAIT = 120.0


def _fields(run_id: str) -> dict[str, object]:
    return {"run_id": run_id, "manifest_sha256": "0" * 64, "drill": "race", "env": "local", "status": "passed"}


def _objects(url: str, under: str) -> list[str]:
    archive = parse_s3(url)
    return sorted(archive.relative(k) for k in S3Store(archive).list(under))


def test_server_enforces_conditional_writes(s3_archive: str) -> None:
    store = S3Store(parse_s3(s3_archive))
    key = store.archive.key("probe")
    assert store.create(key, b"first")
    assert not store.create(key, b"second"), "If-None-Match: * must refuse an existing key"
    got = store.get(key)
    assert got is not None and got[0] == b"first"
    assert not store.replace(key, b"third", '"not-its-etag"'), "If-Match must refuse a stale ETag"
    assert store.replace(key, b"fourth", got[1])
    # Many creates of one new key at the same instant: exactly one wins.
    barrier, wins = threading.Barrier(16), []

    def race(i: int) -> None:
        barrier.wait()
        wins.append(store.create(store.archive.key("contended"), f"writer {i}".encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_concurrent_appenders_never_fork(s3_archive: str) -> None:
    archive = parse_s3(s3_archive)
    barrier, results, errors = threading.Barrier(WRITERS), [], []
    machines = [keys.Ed25519PrivateKey.generate() for _ in range(WRITERS)]  # each writer its own machine and key
    for key in machines:  # every worker's key is pinned in the project's trust file, as a deployment would
        trust.add_key(trust.trust_path(), key.public_key(), None)

    def writer(w: int) -> None:
        key = machines[w]
        store = S3Store(archive)
        barrier.wait()
        try:
            for n in range(APPENDS_EACH):
                results.append(s3ledger.append(store, key, _fields(f"w{w}-{n}")))
        except Exception as exc:  # reported below: a thread's exception would vanish
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = WRITERS * APPENDS_EACH
    entries = s3ledger.read_entries(S3Store(archive))
    assert [e["seq"] for e in entries] == list(range(1, total + 1))
    wanted = sorted(f"w{w}-{n}" for w in range(WRITERS) for n in range(APPENDS_EACH))
    assert sorted(e["run_id"] for e in entries) == wanted
    assert len({e["prev"] for e in entries}) == total  # no two entries chained onto the same one
    assert sum(r.retries for r in results) > 0, "the writers never collided: the test proved nothing"
    head, _ = s3ledger.read_head(S3Store(archive))
    assert head is not None and head["seq"] == total and head["hash"] == entries[-1]["hash"]
    report = remote.verify(archive)
    # Only the bundles are absent (these entries name none): the chain, signatures and HEAD are intact.
    assert report.runs == total
    assert all("run's folder is missing" in p.what for p in report.problems), report.problems


def _worker(project: Project, tmp: Path, name: str, url: str) -> dict[str, str]:
    """A copy of the project with a state folder and a signing key of its own (another machine)."""
    root = tmp / name
    subprocess.run(["cp", "-a", str(project.root), str(root)], check=True)
    return {"DRILLBOOK_PROJECT": str(root), "DRILLBOOK_ARCHIVE": url, "DRILLBOOK_STATE": str(root / ".drillbook"),
            "DRILLBOOK_HOME": str(tmp / f"{name}-home")}


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(DRILLBOOK), *args], cwd=env["DRILLBOOK_PROJECT"], text=True,
                            env={**os.environ, "COLUMNS": "200", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_workers_share_one_bucket(project: Project, tmp_path: Path, s3_archive: str) -> None:
    project.add_notebook("passes.ipynb")
    project.add_notebook("passes.ipynb", name="second.ipynb")
    one, two = _worker(project, tmp_path, "one", s3_archive), _worker(project, tmp_path, "two", s3_archive)
    for worker in (one, two):  # each worker's key is pinned in the project's (committed) trust file first
        pinned = cli(worker["DRILLBOOK_PROJECT"], "keys", "trust", env=worker)
        assert pinned.code == 0, pinned.output
    runs = [_spawn(one, "run", "passes", "--env", "local"), _spawn(two, "run", "second", "--env", "local")]
    outputs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    run_ids = [next(line.split()[-1] for line in out.splitlines() if ": run " in line) for out in outputs]
    for out, run_id in zip(outputs, run_ids):
        assert f"evidence: {s3_archive}/runs/{run_id}/" in out
    verified = cli(project, "verify", "--archive", s3_archive)
    assert verified.code == 0 and "verify: 2 run(s)" in verified.stdout, verified.output
    assert len(_objects(s3_archive, "keys/")) == 2  # each worker published its own key
    chained = {e["run_id"] for e in s3ledger.read_entries(S3Store(parse_s3(s3_archive)))}
    assert chained == set(run_ids)
    status = cli(one["DRILLBOOK_PROJECT"], "status", env=one)
    assert status.code == 0 and all(r in status.stdout for r in run_ids), status.output
    shutil.copy(REPO / "mkdocs.yml", Path(two["DRILLBOOK_PROJECT"]) / "mkdocs.yml")
    shutil.copytree(REPO / "docs", Path(two["DRILLBOOK_PROJECT"]) / "docs", ignore=lambda folder, names: [
        n for n in names if Path(folder) == REPO / "docs" and n in site_build.GENERATED_DOCS])
    site = tmp_path / "site"
    published = cli(two["DRILLBOOK_PROJECT"], "publish", "--out", str(site), env=two)
    assert published.code == 0, published.output
    for run_id in run_ids:
        assert list(site.rglob(f"*{run_id}*")), f"the site has no page for {run_id}"
    assert "verify found problems" not in published.stderr


def _cut_notebook(project: Project) -> None:
    """``passes`` with many attachments, so its upload takes long enough to be cut."""
    path = project.add_notebook("passes.ipynb", name="bulky.ipynb")
    nb = json.loads(path.read_text())
    source = (f"folder = drill.attachments_dir()\nfor i in range({CUT_FILES}):\n"
              "    (folder / f'part-{i:03d}.txt').write_text('evidence ' * 100)")
    nb["cells"].insert(-1, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                            "source": source})
    path.write_text(json.dumps(nb))


def test_upload_cut_half_way_is_never_a_run_and_is_retried(project: Project, s3_archive: str) -> None:
    _cut_notebook(project)
    env = {"DRILLBOOK_ARCHIVE": s3_archive}
    runner = _spawn({**env, "DRILLBOOK_PROJECT": str(project.root)}, "run", "bulky", "--env", "local")
    deadline = time.monotonic() + WAIT
    while not (uploaded := _objects(s3_archive, "runs/")):  # the first object of the bundle has landed
        assert runner.poll() is None and time.monotonic() < deadline, runner.stdout and runner.stdout.read()
        time.sleep(POLL)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    uploaded = _objects(s3_archive, "runs/")
    run_id = uploaded[0].split("/")[1]
    assert f"runs/{run_id}/MANIFEST" not in uploaded, "the upload finished before it was cut: nothing was tested"
    assert not s3ledger.read_entries(S3Store(parse_s3(s3_archive)))
    report = remote.verify(parse_s3(s3_archive))
    assert not report.ok and report.runs == 0
    assert any(p.run_id == run_id and "added outside the ledger" in p.what and f"runs/{run_id}/" in p.what
               for p in report.problems), report.problems
    # Any next command finishes the run: the same bundle, uploaded again, entered with its true status.
    status = cli(project, "status", env=env)
    assert f"recorded run {run_id} as passed" in status.stderr, status.output
    assert run_id in status.stdout and "passed" in status.stdout
    verified = remote.verify(parse_s3(s3_archive))
    assert verified.ok and verified.runs == 1, verified.problems
    assert len([o for o in _objects(s3_archive, f"runs/{run_id}/") if "/attachments/part-" in o]) == CUT_FILES


def test_verify_names_the_offending_object(s3_archive: str) -> None:
    archive = parse_s3(s3_archive)
    store, key = S3Store(archive), keys.Ed25519PrivateKey.generate()
    for n in range(3):
        s3ledger.append(store, key, _fields(f"r{n}"))
    entry = json.loads(store.get(archive.key(s3ledger.entry_name(2)))[0])
    entry["status"] = "failed"  # rewritten behind the ledger's back
    store.put(archive.key(s3ledger.entry_name(2)), json.dumps(entry).encode())
    store.put(archive.key("stray.txt"), b"?")
    store.put(archive.key() + "-old/runs/x/MANIFEST", b"")  # another archive whose prefix starts the same
    problems = [str(p) for p in remote.verify(archive).problems]
    assert not any("-old" in p for p in problems), problems
    assert any(p.startswith("r1: modified: its ledger entry was altered") for p in problems), problems
    assert any(f"object {s3_archive}/stray.txt is not part" in p for p in problems), problems
    store.delete([archive.key(s3ledger.entry_name(2))])
    problems = [str(p) for p in remote.verify(archive).problems]
    assert any(f"(object {s3_archive}/ledger/000000000002.json)" in p for p in problems), problems


def test_status_and_due_fetch_only_new_entries(s3_archive: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from drillbook.cli.run import _ledger_folder
    from drillbook.evidence.archive import latest_runs

    os.environ.update(DRILLBOOK_ARCHIVE=s3_archive, DRILLBOOK_STATE=str(tmp_path / "state"))
    store, key = S3Store(parse_s3(s3_archive)), keys.Ed25519PrivateKey.generate()
    for n in range(3):
        s3ledger.append(store, key, {**_fields(f"r{n}"), "drill": f"d{n % 2}"})
    assert {e["run_id"] for e in latest_runs(_ledger_folder())} == {"r1", "r2"}
    for n in range(3, 5):
        s3ledger.append(store, key, {**_fields(f"r{n}"), "drill": f"d{n % 2}"})
    fetched: list[str] = []
    real_get = S3Store.get
    monkeypatch.setattr(S3Store, "get", lambda self, k: fetched.append(k) or real_get(self, k))
    assert {e["run_id"] for e in latest_runs(_ledger_folder())} == {"r3", "r4"}
    assert sorted(k.rsplit("/", 1)[1] for k in fetched) == ["000000000004.json", "000000000005.json"]


def test_bad_archive_url_is_one_line_and_exit_2(project: Project) -> None:
    result = cli(project, "status", "--archive", "s3://Not_A_Bucket/x")
    assert result.code == 2, result.output
    assert "not a valid S3 bucket name" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("url", ["s3://", "s3://ab", "s3://UPPER/x", "s3://good-bucket/a/../b",
                                 "s3://good-bucket/a/./b", "s3://good-bucket/a b", "s3://good-bucket/%2e%2e"])
def test_bad_urls_are_refused(url: str) -> None:
    from drillbook.errors import EvidenceError

    with pytest.raises(EvidenceError, match="not a valid S3 bucket name|not a plain path"):
        parse_s3(url)
    assert parse_s3("s3://good-bucket/a/b/").key("HEAD") == "a/b/HEAD"


def test_unreachable_bucket_stops_a_run_before_it_starts(s3_server: str, project: Project) -> None:
    from s3support import client_env

    project.add_notebook("passes.ipynb")
    env = {**client_env(s3_server), "DRILLBOOK_ARCHIVE": f"s3://drillbook-{uuid.uuid4().hex[:12]}/x"}
    result = cli(project, "run", "passes", "--env", "local", env=env)
    assert result.code == 2 and "NoSuchBucket" in result.stderr and "hint: check the bucket" in result.stderr, \
        result.output
    assert "PASSED" not in result.output
    assert not list((Path(os.environ["DRILLBOOK_HOME"]) / "runs").glob("run-*")), "the drill started"
    assert not list(project.state.glob("inflight/*.json"))


def test_unused_bucket_name_is_reported(s3_server: str, project: Project) -> None:
    from s3support import client_env

    bucket = f"drillbook-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", **{"endpoint_url": s3_server, "region_name": "us-east-1",
                          "aws_access_key_id": "x", "aws_secret_access_key": "x"}).create_bucket(Bucket=bucket)
    result = cli(project, "verify", "--archive", f"s3://{bucket}/none", env=client_env(s3_server))
    assert result.code == 2 and "no evidence archive at s3://" in result.stderr, result.output


pytestmark = pytest.mark.integration
