"""The recovery drills, run for real N times each: wall time, measured RTO/RPO, probe resolution.

A lab of its own (temporary project, free ports, stopped and removed at the end), the repository's
runbooks and drills copied in, each drill run with `drillbook run` as an operator would, and the
figures read back from each run's record.json. For the failover, each drill run is followed by a
raw failover on the same lab (``baseline.raw_failover``: immediate stop, promote, first write,
nothing else) and the RTO is broken down: raw, the runbook's own steps before the first write
(promotion excluded: the raw figure has it), and the rest, the tool's share (the runbook is started
before the fault and held at its first step, so its kernel's start is not in it).

    .venv/bin/python bench/drills.py [--runs 5] [--drills failover,backup-restore,...]   (default: every drill below)

The network and disk drills need root (nftables, a tmpfs for the WAL): without it they are left out, said so.
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

from baseline import raw_failover

REPO = Path(__file__).resolve().parent.parent
DRILLBOOK = Path(sys.executable).parent / "drillbook"
APPROVE = {"failover": ["fault", "promote"], "backup-restore": [], "key-rotation": ["rotate"],
           "pitr-restore": ["fault"], "cold-start": ["fault", "start"], "partition-standby": ["fault"],
           "partition-primary": ["fault", "promote"], "disk-full": ["fault", "free"]}
NEEDS_ROOT = {"partition-standby", "partition-primary", "disk-full"}  # nftables rules; a tmpfs for the WAL
DRILLS = ",".join(APPROVE)
BEFORE_FIRST_WRITE = ("Check roles", "Estimate the data at risk", "Fence")  # the failover runbook's steps before Promote
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


def run_drill(root: Path, drill: str) -> tuple[float, dict, Path]:
    args = [str(DRILLBOOK), "run", drill, "--env", "local", *[a for g in APPROVE[drill] for a in ("--approve", g)]]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    runs = sorted((Path(os.environ["DRILLBOOK_ARCHIVE"]) / "runs").glob(f"*-{drill}-local-*"))
    record = json.loads((runs[-1] / "record.json").read_text())
    if record["status"] != "passed":
        raise SystemExit(f"{drill} ended {record['status']}: {record['reason']}\n{done.stdout[-2000:]}")
    return wall, {m["name"]: m["value"] for m in record["measures"]}, runs[-1]


def breakdown(bundle: Path, rto: float, raw: dict[str, float]) -> dict[str, float]:
    """The failover drill's RTO next to the raw failover measured right after it on the same lab."""
    child = json.loads((bundle / "attachments" / "postgres-failover.journal.json").read_text())
    steps = sum(s["seconds"] for s in child["steps"] if s["title"].startswith(BEFORE_FIRST_WRITE))
    return {"raw_rto_seconds": raw["rto_seconds"], "raw_promote_seconds": raw["promote_seconds"],
            "runbook_steps_before_promote_seconds": round(steps, 4),
            "tool_share_seconds": round(rto - raw["rto_seconds"] - steps, 4)}


def figure(values: list[float], unit: str = "s", digits: int = 3) -> str:
    unit = f" {unit}" if unit else ""
    return f"median {statistics.median(values):.{digits}f}{unit}, max {max(values):.{digits}f}{unit}"


def unit_of(name: str) -> tuple[str, int]:
    """(unit, digits) for a measure's name: seconds, milliseconds, or a count."""
    if name.endswith("seconds"):
        return "s", 4
    return ("ms", 1) if name.endswith("_ms") or "_ms_" in name else ("", 0)


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
        print(f"  sampling: probe resolution {figure([100 * s for s in share], '%', 1)} of the RTO; "
              f"writer retry ({WRITER_RETRY_SECONDS * 1000:.0f} ms) {figure([100 * r for r in retry], '%', 1)}")
        print("  RTO breakdown (each run next to a raw failover measured right after it):")
        for name in ("rto_seconds", "raw_rto_seconds", "raw_promote_seconds", "promote_step_seconds",
                     "runbook_steps_before_promote_seconds", "tool_share_seconds"):
            print(f"    {name:<38} {figure([m[name] for m in measured], 's', 4)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drills", default=DRILLS)
    args = parser.parse_args()
    from drillbook import lab

    root = make_project()
    try:
        print(f"lab: {lab.status(root).nodes[0].address}, PostgreSQL {lab.status(root).pg_major}, "
              f"{os.cpu_count()} CPUs; {args.runs} runs per drill")
        for drill in args.drills.split(","):
            if drill in NEEDS_ROOT and os.geteuid() != 0:
                print(f"\n{drill}: left out (needs root for its fault)")
                continue
            walls, measured = [], []
            for _ in range(args.runs):
                wall, values, bundle = run_drill(root, drill)
                if drill == "failover":
                    values.update(breakdown(bundle, values["rto_seconds"], raw_failover(root)))
                walls.append(wall)
                measured.append(values)
            report(drill, walls, measured)
    finally:
        lab.down(root, purge=True)
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
