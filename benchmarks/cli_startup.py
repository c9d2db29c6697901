"""How long `fairserve --help` and `fairserve --version` take: the command line's start-up.

Runs each command several times in a fresh interpreter and prints the median.
``--src`` points at another checkout's ``src`` folder to time an older version
the same way (its sources on PYTHONPATH, FAIRSERVE_PURE_PYTHON=1 so that both
import ``.py`` files)::

    python benchmarks/cli_startup.py --src /tmp/before/src --label before
    python benchmarks/cli_startup.py --label after
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cli_startup.json"


def time_command(args: list[str], src: Path, runs: int) -> list[float]:
    """Wall seconds of ``python -m fairserve ARGS``, ``runs`` times."""
    env = os.environ | {"PYTHONPATH": str(src), "FAIRSERVE_PURE_PYTHON": "1"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fairserve", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--label", default="current")
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    entry: dict[str, object] = {"src": str(opts.src), "runs": opts.runs,
                                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                                "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    for args in (["--help"], ["simulate", "--help"]):
        times = time_command(args, opts.src, opts.runs)
        median = statistics.median(times)
        entry[" ".join(args)] = {
            "median_s": round(median, 3),
            "all_s": [round(t, 3) for t in times],
        }
        print(f"{opts.label}: fairserve {' '.join(args)}: median {median:.3f} s of {opts.runs}")
    results[opts.label] = entry
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
