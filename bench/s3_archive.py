"""The archive on object storage: `verify` and `status` against the same archive in a folder, and
the shared ledger's append rate with several writers at once.

An S3 server (moto's application, one request at a time so its conditional writes are atomic,
as the tests serve it) runs on a free loopback port. The folder archive is written as
bench/archive_scale.py writes it (copies of a real smoke run through the real evidence API);
the same bundles and the same signed ledger entries are then uploaded, one object per entry,
so both commands see the identical archive. Each command is timed as an operator runs it (a
fresh process, imports included); `status` on S3 twice: a first call on a new machine (every
entry fetched) and a later one (only the listing; the entries come from the local cache).

Then WRITERS processes, each with a signing key of its own, append ENTRIES ledger entries in
all into one fresh bucket at the same time; the chain is checked afterwards (no fork, no loss).

    .venv/bin/python bench/s3_archive.py [--runs 10000] [--writers 4] [--entries 200]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from archive_scale import fill_archive, real_bundle, time_cli  # noqa: E402
from common import scratch_project  # noqa: E402

SERVE = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
"""


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL_S3=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import boto3

    deadline = time.monotonic() + 60
    while True:
        try:
            boto3.client("s3").list_buckets()
            return server, endpoint
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the S3 server did not start")
            time.sleep(0.1)


def new_bucket(name: str) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}/evidence"


def upload_archive(folder: Path, url: str) -> float:
    """The folder archive's files as objects, and its ledger lines as one object per entry."""
    from drillbook.evidence import ledger, s3ledger
    from drillbook.evidence.store import S3Store, parse_s3

    store = S3Store(parse_s3(url))
    t0 = time.perf_counter()
    files = {store.archive.key(p.relative_to(folder).as_posix()): p for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != ledger.LEDGER_NAME and not p.name.startswith(".")}
    store.upload(files)
    entries = ledger.read_entries(folder)
    staged = folder.parent / "entries"
    staged.mkdir(exist_ok=True)
    objects = {}
    for entry in entries:
        path = staged / f"{entry['seq']}.json"
        path.write_text(json.dumps(entry, sort_keys=True) + "\n")
        objects[store.archive.key(s3ledger.entry_name(entry["seq"]))] = path
    store.upload(objects)
    return time.perf_counter() - t0


def _writer(url: str, count: int, name: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from drillbook.evidence import keys, s3ledger
    from drillbook.evidence.store import S3Store, parse_s3

    key, store, retries = keys.Ed25519PrivateKey.generate(), S3Store(parse_s3(url)), 0
    for n in range(count):
        fields = {"run_id": f"{name}-{n}", "manifest_sha256": "0" * 64, "drill": "bench", "env": "local"}
        retries += s3ledger.append(store, key, fields).retries  # type: ignore[arg-type]
    results.put(retries)


def bench_appends(url: str, writers: int, entries: int) -> None:
    from drillbook.evidence import s3ledger
    from drillbook.evidence.store import S3Store, parse_s3

    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    each = entries // writers
    procs = [multiprocessing.Process(target=_writer, args=(url, each, f"w{w}", results)) for w in range(writers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    retries = sum(results.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    chain = s3ledger.read_entries(S3Store(parse_s3(url)))
    intact = [e.get("seq") for e in chain] == list(range(1, each * writers + 1)) and \
        len({e.get("run_id") for e in chain}) == each * writers and len({e.get("prev") for e in chain}) == len(chain)
    print(f"append: {each * writers} entries from {writers} concurrent writers in {elapsed:.1f} s "
          f"({each * writers / elapsed:.1f} entries/s), {retries} retries (lost conditional creates); "
          f"chain {'intact: no fork, no entry lost' if intact else 'BROKEN'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--entries", type=int, default=200)
    args = parser.parse_args()
    root = scratch_project("s3")
    folder = root / "reports" / "evidence"
    template = real_bundle(root)
    fill_archive(folder, template, args.runs - 1)
    server, _ = start_server()
    try:
        url = new_bucket("drillbook-bench")
        uploaded = upload_archive(folder, url)
        print(f"archive of {args.runs} runs uploaded in {uploaded:.1f} s")
        folder_verify, s3_verify = time_cli(["verify"], root), time_cli(["verify", "--archive", url], root)
        folder_status = time_cli(["status"], root)
        cold, warm = time_cli(["status", "--archive", url], root), time_cli(["status", "--archive", url], root)
        print(f"verify ({args.runs} runs): folder {folder_verify:.2f} s, S3 {s3_verify:.2f} s "
              f"(S3/folder {s3_verify / folder_verify:.1f}x)")
        print(f"status ({args.runs} runs): folder {folder_status:.2f} s, S3 first call {cold:.2f} s "
              f"({cold / folder_status:.1f}x), S3 later call {warm:.2f} s ({warm / folder_status:.1f}x)")
        bench_appends(new_bucket("drillbook-bench-append"), args.writers, args.entries)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
