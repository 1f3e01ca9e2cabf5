"""`drillbook verify` and `drillbook status` on a synthetic archive of 10,000 runs.

The archive is written through the real evidence API (bundles, MANIFEST, signed ledger),
each bundle a copy of a real run of the smoke drill (record, executed notebook, run-time
HTML), so file sizes are realistic. The project pins its key in parameters/trust.yaml (the first
entry does) and is a git repository whose evidence-anchors branch holds an anchor of the head, so
verify checks the trust windows and the anchors too. Then the two commands are timed as an operator
runs them: fresh processes, imports included; and verify in this process against its floor, measured
here too: the sha256 of every byte of every bundle plus one ed25519 check per entry, one after the other.

    .venv/bin/python bench/archive_scale.py [--runs 10000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, scratch_project, summary  # noqa: E402


def real_bundle(root: Path) -> Path:
    """One real run of the smoke drill in the scratch project, to copy from."""
    from drillbook.runner import execute, plan

    smoke = root / "notebooks" / "drills" / "smoke.ipynb"
    smoke.write_bytes((REPO / "notebooks" / "drills" / "smoke.ipynb").read_bytes())
    outcome = execute.run(plan.RunRequest("smoke", "local"))
    return outcome.bundle


def fill_archive(archive: Path, template: Path, runs: int) -> float:
    from drillbook.config.secrets import Redactor
    from drillbook.evidence import keys
    from drillbook.evidence.archive import record_run

    key = keys.load_or_create_signing_key()
    record = json.loads((template / "record.json").read_text())
    notebook = json.loads((template / "notebook.ipynb").read_text())
    html = (template / "notebook.html").read_text()
    redactor = Redactor()
    drills, envs, statuses = ["smoke", "failover", "backup-restore", "key-rotation"], ["local", "staging", "prod"], \
        ["passed"] * 8 + ["failed", "error"]
    t0 = time.perf_counter()
    for i in range(runs):
        rec = dict(record, run_id=f"20260101T{i:06d}Z-bench-{i}", drill=drills[i % 4], env=envs[i % 3],
                   status=statuses[i % 10])
        record_run(archive, key, rec, redactor, notebook=notebook, html=html)
        if (i + 1) % 1000 == 0:
            print(f"  wrote {i + 1} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def time_cli(args: list[str], cwd: Path, expect: int = 0) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "drillbook"), *args], cwd=cwd, capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - t0
    assert done.returncode == expect, done.stdout + done.stderr
    return elapsed


def floor(archive: Path) -> tuple[float, float]:
    """Seconds to hash every file of every bundle, and to check every entry's signature (one thread each)."""
    from cryptography.hazmat.primitives import serialization

    files = [os.path.join(folder, n) for folder, _, names in os.walk(archive / "runs") for n in names]
    t0 = time.perf_counter()
    for name in files:
        with open(name, "rb", buffering=0) as handle:
            hashlib.file_digest(handle, "sha256")
    hashing = time.perf_counter() - t0
    public = {p.stem: serialization.load_pem_public_key(p.read_bytes()) for p in (archive / "keys").glob("*.pem")}
    entries = [json.loads(line) for line in (archive / "ledger.jsonl").read_text().splitlines()]
    t0 = time.perf_counter()
    for entry in entries:
        public[entry["key_id"]].verify(base64.b64decode(entry["sig"]), entry["hash"].encode("ascii"))
    return hashing, time.perf_counter() - t0


def in_process(archive: Path) -> float:
    from drillbook.evidence.anchors import anchors_of
    from drillbook.evidence.verify import verify_archive

    t0 = time.perf_counter()
    report = verify_archive(archive, anchors=anchors_of(archive))
    elapsed = time.perf_counter() - t0
    assert report.ok, report.problems[:3]
    return elapsed


def anchor(root: Path) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    time_cli(["anchor"], root)
    assert (root / "parameters" / "trust.yaml").is_file(), "the first entry pins its key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = scratch_project("archive")
    archive = root / "reports" / "evidence"
    template = real_bundle(root)
    size = sum(p.stat().st_size for p in template.iterdir())
    print(f"writing {args.runs} bundles of {size / 1024:.0f} KiB each (copies of a real smoke run) …")
    written = fill_archive(archive, template, args.runs - 1)
    print(f"archive written in {written:.1f} s ({written / args.runs * 1000:.2f} ms per run, "
          f"{sum(p.stat().st_size for p in archive.rglob('*') if p.is_file()) / 2**20:.0f} MiB)")
    anchor(root)
    os.sync()
    floors = [floor(archive) for _ in range(args.repeat)]
    inside = [in_process(archive) for _ in range(args.repeat)]
    verify = [time_cli(["verify"], root) for _ in range(args.repeat)]
    status = [time_cli(["status"], root) for _ in range(args.repeat)]
    bare = [time_cli(["--help"], root) for _ in range(args.repeat)]
    hashing, signing = statistics.median(f[0] for f in floors), statistics.median(f[1] for f in floors)
    base = hashing + signing
    print(f"floor: sha256 of every byte {hashing:.3f} s + one ed25519 check per entry {signing:.3f} s = {base:.3f} s")
    print(f"verify in this process         {summary(inside)}  ({statistics.median(inside) / base:.2f} x the floor)")
    print(f"drillbook verify ({args.runs} runs)  {summary(verify)}  ({statistics.median(verify) / base:.2f} x the floor; "
          "target <= 1.5 s, trust file and anchors in play)")
    print(f"drillbook status ({args.runs} runs)  {summary(status)}  (target <= 2 s)")
    print(f"drillbook --help (process start)   {summary(bare)}")
    print(f"verify per run: {statistics.median(verify) / args.runs * 1000:.2f} ms")


if __name__ == "__main__":
    main()
