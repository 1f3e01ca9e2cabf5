"""How much does `drillbook run` cost over bare papermill on the same trivial notebook?

Both run in this same process, alternating, after one warm-up each (imports amortised), so
the ratio is the runner's own work: parameter checks, lock, marker, journal, scrubbing, HTML
rendering, hashing, signing and the ledger. Then the same comparison for the command lines
(`drillbook run` versus `papermill`), each a fresh process.

    .venv/bin/python bench/run_overhead.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_fixture, scratch_project, summary  # noqa: E402


def time_papermill(notebook: Path, out: Path) -> float:
    import papermill

    t0 = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(out), parameters={"x": 2}, progress_bar=False)
    return time.perf_counter() - t0


def time_drillbook(notebook: Path) -> float:
    from drillbook.runner import execute, plan

    t0 = time.perf_counter()
    outcome = execute.run(plan.RunRequest(str(notebook), "local", {"x": "2"}))
    assert outcome.status == "passed", outcome.reason
    return time.perf_counter() - t0


def time_command(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    root = scratch_project("overhead")
    notebook = add_fixture(root, "trivial.ipynb")
    out = root.parent / "papermill-out.ipynb"

    time_papermill(notebook, out), time_drillbook(notebook)  # warm-up: imports, first kernel
    bare, ours = [], []
    for _ in range(args.repeat):
        bare.append(time_papermill(notebook, out))
        ours.append(time_drillbook(notebook))
    ratio = statistics.median(ours) / statistics.median(bare)
    print("in-process, trivial notebook (3 cells):")
    print(f"  papermill.execute_notebook  {summary(bare)}")
    print(f"  drillbook execute.run       {summary(ours)}")
    print(f"  ratio drillbook / papermill {ratio:.2f}x  (target <= 1.25x)")

    bin_dir = Path(sys.executable).parent
    cli_bare, cli_ours = [], []
    for _ in range(max(5, args.repeat // 2)):
        cli_bare.append(time_command([str(bin_dir / "papermill"), str(notebook), str(out), "-p", "x", "2"], root))
        cli_ours.append(time_command([str(bin_dir / "drillbook"), "run", str(notebook), "--env", "local",
                                      "-p", "x=2"], root))
    cli_ratio = statistics.median(cli_ours) / statistics.median(cli_bare)
    print("command line, fresh process each time:")
    print(f"  papermill NB OUT            {summary(cli_bare)}")
    print(f"  drillbook run NB --env      {summary(cli_ours)}")
    print(f"  ratio drillbook / papermill {cli_ratio:.2f}x  (target <= 1.15x)")


if __name__ == "__main__":
    main()
