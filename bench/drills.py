"""The recovery drills, run for real N times each: wall time, measured RTO/RPO, probe resolution.

A lab of its own (temporary project, free ports, stopped and removed at the end), the repository's
runbooks and drills copied in, each drill run with `drillbook run` as an operator would, and the
figures read back from each run's record.json. "Tool's share" is how much of the measured RTO
could be the tool's own sampling: the largest gap between two probes (the probe resolution) and
the writer's retry interval, as a fraction of the RTO.

    .venv/bin/python bench/drills.py [--runs 5] [--drills failover,backup-restore,key-rotation]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DRILLBOOK = Path(sys.executable).parent / "drillbook"
APPROVE = {"failover": ["fault", "promote"], "backup-restore": [], "key-rotation": ["rotate"]}
WRITER_RETRY_SECONDS = 0.02  # measure.load.SequencedWriter's retry_interval: the RTO's own granularity


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def make_project() -> Path:
    """A project with a lab of its own on free ports, and the repository's runbooks and drills."""
    from drillbook import lab

    base = Path(tempfile.mkdtemp(prefix="drillbook-bench-drills-"))
    os.chmod(base, 0o755)  # the lab's OS user must enter it
    root = base / "project"
    for folder in ("runbooks", "notebooks/drills"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "parameters" / "environments").mkdir(parents=True)
    pg1, pg2, ssh, pgbouncer, redis = free_ports(5)
    ports = lab.LabPorts(pg1=pg1, pg2=pg2, ssh=ssh, pgbouncer=pgbouncer, redis=redis)
    (root / "parameters" / "environments" / "local.yaml").write_text(lab.environment_yaml(ports, lab.lab_user()))
    os.environ.update(DRILLBOOK_HOME=str(base / "home"), DRILLBOOK_ARCHIVE=str(base / "archive"))
    lab.up(root, ports)
    return root


def run_drill(root: Path, drill: str) -> tuple[float, dict]:
    args = [str(DRILLBOOK), "run", drill, "--env", "local", *[a for g in APPROVE[drill] for a in ("--approve", g)]]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    runs = sorted((Path(os.environ["DRILLBOOK_ARCHIVE"]) / "runs").glob(f"*-{drill}-local-*"))
    record = json.loads((runs[-1] / "record.json").read_text())
    if record["status"] != "passed":
        raise SystemExit(f"{drill} ended {record['status']}: {record['reason']}\n{done.stdout[-2000:]}")
    return wall, {m["name"]: m["value"] for m in record["measures"]}


def figure(values: list[float], unit: str = "s", digits: int = 3) -> str:
    unit = f" {unit}" if unit else ""
    return f"median {statistics.median(values):.{digits}f}{unit}, max {max(values):.{digits}f}{unit}"


def unit_of(name: str) -> tuple[str, int]:
    """(unit, digits) for a measure's name: seconds, milliseconds, or a count."""
    if name.endswith("seconds"):
        return "s", 4
    return ("ms", 1) if name.endswith("_ms") else ("", 0)


def report(drill: str, walls: list[float], measured: list[dict]) -> None:
    print(f"\n{drill}  ({len(walls)} runs, all passed)")
    print(f"  wall time (drillbook run)        {figure(walls, digits=2)}")
    first = ("rto_seconds", "rpo_seconds", "rpo_writes")
    names = sorted({n for m in measured for n in m}, key=lambda n: (first.index(n) if n in first else 9, n))
    for name in names:
        print(f"  {name:<32} {figure([m[name] for m in measured if name in m], *unit_of(name))}")
    if drill == "failover":
        share = [m["probe_resolution_seconds"] / m["rto_seconds"] for m in measured]
        retry = [WRITER_RETRY_SECONDS / m["rto_seconds"] for m in measured]
        kernel = [m["rto_seconds"] - m["runbook_seconds"] for m in measured]
        print(f"  tool's share of the RTO: probe resolution {figure([100 * s for s in share], '%', 1)}; "
              f"writer retry ({WRITER_RETRY_SECONDS * 1000:.0f} ms) {figure([100 * r for r in retry], '%', 1)}")
        print(f"  RTO outside the runbook's own steps (crash, papermill kernel start, reconnect): {figure(kernel)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drills", default="failover,backup-restore,key-rotation")
    args = parser.parse_args()
    from drillbook import lab

    root = make_project()
    try:
        print(f"lab: {lab.status(root).nodes[0].address}, PostgreSQL {lab.status(root).pg_major}, "
              f"{os.cpu_count()} CPUs; {args.runs} runs per drill")
        for drill in args.drills.split(","):
            walls, measured = [], []
            for _ in range(args.runs):
                wall, values = run_drill(root, drill)
                walls.append(wall)
                measured.append(values)
            report(drill, walls, measured)
    finally:
        lab.down(root, purge=True)
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
